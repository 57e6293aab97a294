//! Clinical events: message kinds with a schema, checked by every server before a message
//! is stored (docs/workflows.md).
//!
//! A health post logs more than chat: a structured emergency, vital signs, a medication
//! given, a shift hand-off, a referral. Each is a message of kind `clinical.<name>` whose
//! body must match that kind's schema; one that does not is refused with
//! `invalid_event`, naming the field, and is not stored. Every other kind passes as
//! before. The checks are plain functions of the body, so the hub, the cloud and the
//! tests agree on them; the web client mirrors them in its forms.
//!
//! Patients are named by an id the deployment chooses ([`PATIENT_ID`]), never by name:
//! in a room that is not end-to-end encrypted the body travels the uplink as written.
//! Bodies in encrypted rooms are sealed envelopes the server cannot read: they are checked
//! by the sending client only (docs/workflows.md, "Patients and privacy").

use serde_json::{Map, Value};

use crate::ids::Priority;

/// The kinds this module knows, each with its schema: the clinical events, and the
/// bookings and changes a doctor's queue is derived from ([`crate::queue`]).
pub const KINDS: [&str; 9] = [
    "clinical.emergency",
    "clinical.vitals",
    "clinical.medication",
    "clinical.handoff",
    "clinical.referral",
    crate::queue::BOOK,
    crate::queue::UPDATE,
    crate::record::EDIT,
    MISSED_CALL,
];

/// A patient id: 1 to 64 of letters, digits and `. _ - :`, chosen by the deployment (a
/// register number, a card number). A name with a space is refused, which keeps the most
/// common slip (a name typed into the id field) out of the uplink.
pub const PATIENT_ID: &str = "1 to 64 letters, digits or . _ - :";
/// The kind of the message a caller leaves when a call was not answered (docs/protocol.md,
/// "call").
pub const MISSED_CALL: &str = "call.missed";

/// Whether `id` is a patient id ([`PATIENT_ID`]).
pub fn is_patient_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':'))
}

/// Longest free-text field (what happened, a reason, a note), characters.
pub const MAX_TEXT: usize = 2000;
/// Longest short text field (a drug, a place, a facility), characters.
pub const MAX_SHORT: usize = 200;
/// Most open tasks in one hand-off.
pub const MAX_TASKS: usize = 100;
/// How far ahead a rescheduled appointment may be set, ms (a year).
pub const MAX_DUE_AHEAD_MS: u64 = 366 * 86_400_000;

/// Why a clinical event's body was refused: the field (a dotted path such as
/// `bp.systolic`) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: field `{field}` {problem}")]
pub struct EventError {
    pub kind: String,
    pub field: String,
    pub problem: String,
}

/// Whether `kind` has a schema here.
pub fn is_clinical(kind: &str) -> bool {
    KINDS.contains(&kind)
}

/// Checks a message of `kind` at `priority` with `body` (JSON text). Kinds without a
/// schema pass. `now_ms` bounds times in the future (a clock a few minutes fast is
/// allowed).
pub fn validate(kind: &str, priority: Priority, body: &str, now_ms: u64) -> Result<(), EventError> {
    if !is_clinical(kind) {
        return Ok(());
    }
    let err = |field: &str, problem: String| EventError { kind: kind.to_owned(), field: field.to_owned(), problem };
    let value: Value = serde_json::from_str(body).map_err(|e| err("body", format!("is not JSON: {e}")))?;
    let Value::Object(obj) = value else {
        return Err(err("body", "must be a JSON object".into()));
    };
    let mut c = Checker { obj: &obj, prefix: String::new(), now_ms, seen: Vec::new() };
    let checked = match kind {
        "clinical.emergency" => emergency(&mut c, priority),
        "clinical.vitals" => vitals(&mut c),
        "clinical.medication" => medication(&mut c),
        "clinical.handoff" => handoff(&mut c),
        "clinical.referral" => referral(&mut c),
        crate::queue::BOOK => book(&mut c),
        crate::queue::UPDATE => update(&mut c),
        crate::record::EDIT => record_edit(&mut c),
        _ => missed_call(&mut c),
    };
    checked.and_then(|()| c.no_others()).map_err(|(field, problem)| err(&field, problem))
}

type Check = Result<(), (String, String)>;

/// Reads the fields of one JSON object, remembering which were read so that any other
/// field is refused by name (a misspelt `puls` must not be stored as if it were data).
struct Checker<'a> {
    obj: &'a Map<String, Value>,
    /// The path of this object inside the body (`bp.`).
    prefix: String,
    now_ms: u64,
    seen: Vec<&'static str>,
}

/// Fields every clinical body may carry: a one-line summary older clients show as the
/// message text, and a free note.
const COMMON: [&str; 2] = ["text", "note"];

impl<'a> Checker<'a> {
    fn path(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn fail<T>(&self, name: &str, problem: impl Into<String>) -> Result<T, (String, String)> {
        Err((self.path(name), problem.into()))
    }

    fn get(&mut self, name: &'static str) -> Option<&'a Value> {
        self.seen.push(name);
        self.obj.get(name).filter(|v| !v.is_null())
    }

    fn required(&mut self, name: &'static str) -> Result<&'a Value, (String, String)> {
        match self.get(name) {
            Some(v) => Ok(v),
            None => self.fail(name, "is required"),
        }
    }

    fn text(&mut self, name: &'static str, max: usize, required: bool) -> Result<Option<&'a str>, (String, String)> {
        let v = if required { Some(self.required(name)?) } else { self.get(name) };
        let Some(v) = v else { return Ok(None) };
        let Some(s) = v.as_str() else { return self.fail(name, "must be text") };
        if s.trim().is_empty() {
            return self.fail(name, "must not be empty");
        }
        if s.chars().count() > max {
            return self.fail(name, format!("is longer than {max} characters"));
        }
        Ok(Some(s))
    }

    fn one_of(&mut self, name: &'static str, allowed: &[&str], required: bool) -> Check {
        let v = if required { Some(self.required(name)?) } else { self.get(name) };
        match v {
            None => Ok(()),
            Some(Value::String(s)) if allowed.contains(&s.as_str()) => Ok(()),
            Some(other) => self.fail(name, format!("must be one of {} (got {other})", allowed.join(", "))),
        }
    }

    fn patient(&mut self, name: &'static str, required: bool) -> Check {
        let Some(id) = self.text(name, 64, required)? else { return Ok(()) };
        if is_patient_id(id) {
            Ok(())
        } else {
            self.fail(name, format!("must be a patient id ({PATIENT_ID}), never a name"))
        }
    }

    fn user(&mut self, name: &'static str) -> Check {
        let id = self.text(name, 64, true)?.unwrap_or_default();
        match crate::ids::UserId::new(id) {
            Ok(_) => Ok(()),
            Err(e) => self.fail(name, format!("must be a user id: {e}")),
        }
    }

    /// A time in ms since the Unix epoch, not more than a day ahead of `now`.
    fn time(&mut self, name: &'static str, required: bool) -> Check {
        self.time_ahead(name, required, 86_400_000)
    }

    /// A time in ms since the Unix epoch, at most `ahead_ms` after `now`.
    fn time_ahead(&mut self, name: &'static str, required: bool, ahead_ms: u64) -> Check {
        let v = if required { Some(self.required(name)?) } else { self.get(name) };
        let Some(v) = v else { return Ok(()) };
        let Some(t) = v.as_u64() else {
            return self.fail(name, "must be a time in milliseconds since 1970 (a whole number)");
        };
        // 2001-09-09: anything earlier is a unit slip (seconds instead of milliseconds).
        if t < 1_000_000_000_000 {
            return self.fail(name, "must be in milliseconds since 1970, not seconds");
        }
        if t > self.now_ms.saturating_add(ahead_ms) {
            let days = ahead_ms / 86_400_000;
            return self.fail(
                name,
                if days == 1 {
                    "is more than a day in the future".to_owned()
                } else {
                    format!("is more than {days} days in the future")
                },
            );
        }
        Ok(())
    }

    fn number(&mut self, name: &'static str, lo: f64, hi: f64, unit: &str) -> Result<Option<f64>, (String, String)> {
        let Some(v) = self.get(name) else { return Ok(None) };
        let Some(n) = v.as_f64() else { return self.fail(name, "must be a number") };
        if !(lo..=hi).contains(&n) {
            return self.fail(name, format!("must be between {lo} and {hi} {unit} (got {n})"));
        }
        Ok(Some(n))
    }

    /// A nested object, checked by `f` with its own field list.
    fn object(
        &mut self,
        name: &'static str,
        f: impl FnOnce(&mut Checker<'a>) -> Check,
    ) -> Result<bool, (String, String)> {
        let Some(v) = self.get(name) else { return Ok(false) };
        let Value::Object(obj) = v else { return self.fail(name, "must be an object") };
        let mut inner = Checker { obj, prefix: format!("{}.", self.path(name)), now_ms: self.now_ms, seen: Vec::new() };
        f(&mut inner)?;
        inner.no_others()?;
        Ok(true)
    }

    fn no_others(&self) -> Check {
        let top = self.prefix.is_empty();
        let allowed = |k: &str| self.seen.contains(&k) || top && COMMON.contains(&k);
        match self.obj.keys().find(|k| !allowed(k.as_str())) {
            Some(k) => self.fail(k, "is not a field of this event; check its spelling (docs/workflows.md)"),
            None => Ok(()),
        }
    }

    fn common(&mut self) -> Check {
        self.text("text", MAX_TEXT, false)?;
        self.text("note", MAX_TEXT, false)?;
        Ok(())
    }
}

fn emergency(c: &mut Checker<'_>, priority: Priority) -> Check {
    c.common()?;
    c.one_of("severity", &["critical", "serious", "moderate"], true)?;
    c.patient("patient", false)?;
    c.text("location", MAX_SHORT, true)?;
    c.text("what", MAX_TEXT, true)?;
    c.time("at", false)?;
    if priority != Priority::Emergency {
        return Err(("priority".into(), "must be \"emergency\" for a clinical.emergency".into()));
    }
    Ok(())
}

fn vitals(c: &mut Checker<'_>) -> Check {
    c.common()?;
    c.patient("patient", true)?;
    c.time("taken_at", true)?;
    let mut any = false;
    any |= c.object("bp", |b| {
        b.one_of("unit", &["mmHg"], true)?;
        let sys = b.number("systolic", 40.0, 300.0, "mmHg")?;
        let dia = b.number("diastolic", 20.0, 200.0, "mmHg")?;
        match (sys, dia) {
            (None, _) => b.fail("systolic", "is required"),
            (_, None) => b.fail("diastolic", "is required"),
            (Some(s), Some(d)) if d >= s => b.fail("diastolic", format!("must be below the systolic ({d} ≥ {s})")),
            _ => Ok(()),
        }
    })?;
    any |= reading(c, "pulse", &[("bpm", 20.0, 300.0)])?;
    any |= reading(c, "temperature", &[("C", 25.0, 45.0), ("F", 77.0, 113.0)])?;
    any |= reading(c, "spo2", &[("%", 50.0, 100.0)])?;
    any |= reading(c, "respiratory_rate", &[("/min", 4.0, 80.0)])?;
    if !any {
        return Err((
            "bp".into(),
            "or another reading is required: bp, pulse, temperature, spo2 or respiratory_rate".into(),
        ));
    }
    Ok(())
}

/// `{"value": n, "unit": u}` with the plausible range of its unit.
fn reading(
    c: &mut Checker<'_>,
    name: &'static str,
    units: &'static [(&'static str, f64, f64)],
) -> Result<bool, (String, String)> {
    c.object(name, |r| {
        let names: Vec<&str> = units.iter().map(|(u, _, _)| *u).collect();
        r.one_of("unit", &names, true)?;
        let unit = r.obj.get("unit").and_then(Value::as_str).unwrap_or_default();
        let (u, lo, hi) = units.iter().find(|(u, _, _)| *u == unit).copied().unwrap_or(units[0]);
        match r.number("value", lo, hi, u)? {
            Some(_) => Ok(()),
            None => r.fail("value", "is required"),
        }
    })
}

fn medication(c: &mut Checker<'_>) -> Check {
    c.common()?;
    c.patient("patient", true)?;
    c.text("drug", MAX_SHORT, true)?;
    let dose = c.object("dose", |d| {
        d.one_of("unit", &["mg", "g", "mcg", "ml", "IU", "tablet", "capsule", "drop", "puff", "sachet"], true)?;
        match d.number("value", 0.0, 100_000.0, "")? {
            Some(v) if v > 0.0 => Ok(()),
            Some(_) => d.fail("value", "must be more than 0"),
            None => d.fail("value", "is required"),
        }
    })?;
    if !dose {
        return Err(("dose".into(), "is required".into()));
    }
    c.one_of(
        "route",
        &["oral", "iv", "im", "sc", "topical", "inhaled", "rectal", "sublingual", "nasal", "eye", "ear", "other"],
        true,
    )?;
    c.time("given_at", true)
}

fn handoff(c: &mut Checker<'_>) -> Check {
    c.common()?;
    c.user("from")?;
    c.user("to")?;
    let Some(tasks) = c.get("open_tasks") else { return Ok(()) };
    let Some(tasks) = tasks.as_array() else { return c.fail("open_tasks", "must be a list") };
    if tasks.len() > MAX_TASKS {
        return c.fail("open_tasks", format!("must hold at most {MAX_TASKS} tasks"));
    }
    for (i, t) in tasks.iter().enumerate() {
        let Value::Object(obj) = t else { return c.fail(&format!("open_tasks.{i}"), "must be an object") };
        let mut inner = Checker { obj, prefix: format!("open_tasks.{i}."), now_ms: c.now_ms, seen: Vec::new() };
        inner.text("task", MAX_SHORT, true)?;
        inner.patient("patient", false)?;
        inner.time("due_at", false)?;
        inner.no_others()?;
    }
    Ok(())
}

fn referral(c: &mut Checker<'_>) -> Check {
    c.common()?;
    c.patient("patient", true)?;
    c.text("to", MAX_SHORT, true)?;
    c.text("reason", MAX_TEXT, true)?;
    c.one_of("urgency", &["routine", "urgent", "emergency"], true)?;
    c.text("transport", MAX_SHORT, false)?;
    Ok(())
}

fn book(c: &mut Checker<'_>) -> Check {
    c.common()?;
    c.user("queue")?;
    c.patient("patient", true)?;
    c.text("reason", MAX_TEXT, true)?;
    c.one_of("urgency", &crate::queue::URGENCIES, true)
}

fn update(c: &mut Checker<'_>) -> Check {
    c.common()?;
    c.user("queue")?;
    let booking = c.text("booking", 64, true)?.unwrap_or_default();
    if uuid::Uuid::parse_str(booking).is_err() {
        return c.fail("booking", "must be the booking's message id (a UUID)");
    }
    c.one_of("status", &crate::queue::STATUSES, false)?;
    c.one_of("urgency", &crate::queue::URGENCIES, false)?;
    let status = c.obj.get("status").and_then(Value::as_str);
    c.time_ahead("due_at", status == Some("rescheduled"), MAX_DUE_AHEAD_MS)?;
    if status.is_none() && c.obj.get("urgency").is_none_or(Value::is_null) {
        return c.fail("status", "or urgency is required");
    }
    Ok(())
}

fn missed_call(c: &mut Checker<'_>) -> Check {
    c.common()?;
    c.user("to")?;
    let call = c.text("call", 64, true)?.unwrap_or_default();
    if uuid::Uuid::parse_str(call).is_err() {
        return c.fail("call", "must be the call's id (a UUID)");
    }
    match c.get("video") {
        None | Some(Value::Bool(_)) => Ok(()),
        Some(_) => c.fail("video", "must be true or false"),
    }
}

fn record_edit(c: &mut Checker<'_>) -> Check {
    c.common()?;
    c.patient("patient", true)?;
    c.one_of("role", &["worker", "doctor", "supervisor", "admin"], true)?;
    let field = c.text("field", 64, true)?.unwrap_or_default();
    let item = field.strip_prefix(crate::record::CARE_PLAN);
    let key_ok = |k: &str| {
        (1..=32).contains(&k.len())
            && k.chars().all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-' || ch == '_')
    };
    match item {
        Some(key) if key_ok(key) => {}
        None if crate::record::TEXT_FIELDS.contains(&field) => {}
        _ => {
            return c.fail(
                "field",
                format!(
                    "must be problems, allergies or care_plan.<key> (key: 1 to 32 of a-z, 0-9, - and _); got {field}"
                ),
            );
        }
    }
    // `value` must be present; `null` clears the field.
    if !c.obj.contains_key("value") {
        c.seen.push("value");
        return c.fail("value", "is required (null clears the field)");
    }
    if item.is_some() {
        c.object("value", |v| {
            v.text("task", MAX_SHORT, true)?;
            match v.get("done") {
                None | Some(Value::Bool(_)) => Ok(()),
                Some(_) => v.fail("done", "must be true or false"),
            }
        })?;
    } else {
        c.text("value", MAX_TEXT, false)?;
    }
    let Some(base) = c.get("base") else { return Ok(()) };
    let Some(base) = base.as_array() else { return c.fail("base", "must be a list of version ids") };
    if base.len() > crate::record::MAX_BASE {
        return c.fail("base", format!("must name at most {} versions", crate::record::MAX_BASE));
    }
    for (i, v) in base.iter().enumerate() {
        if v.as_str().and_then(|s| uuid::Uuid::parse_str(s).ok()).is_none() {
            return c.fail(&format!("base.{i}"), "must be a version id (the message id of an edit)");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: u64 = 1_780_000_000_000;

    fn check(kind: &str, body: Value) -> Result<(), EventError> {
        let priority = if kind == "clinical.emergency" { Priority::Emergency } else { Priority::Normal };
        validate(kind, priority, &body.to_string(), NOW)
    }

    /// The field a refusal names.
    fn field(kind: &str, body: Value) -> String {
        match check(kind, body) {
            Err(e) => e.field,
            Ok(()) => "accepted".into(),
        }
    }

    fn vitals() -> Value {
        json!({"patient": "KJ-0042", "taken_at": NOW - 60_000,
               "bp": {"systolic": 128, "diastolic": 84, "unit": "mmHg"},
               "pulse": {"value": 76, "unit": "bpm"},
               "temperature": {"value": 37.2, "unit": "C"},
               "spo2": {"value": 97, "unit": "%"}})
    }

    fn with(mut v: Value, path: &[&str], x: Value) -> Value {
        let mut at = &mut v;
        for p in &path[..path.len() - 1] {
            at = &mut at[*p];
        }
        at[path[path.len() - 1]] = x;
        v
    }

    fn without(mut v: Value, path: &[&str]) -> Value {
        let mut at = &mut v;
        for p in &path[..path.len() - 1] {
            at = &mut at[*p];
        }
        if let Some(o) = at.as_object_mut() {
            o.remove(path[path.len() - 1]);
        }
        v
    }

    #[test]
    fn other_kinds_pass_as_before() {
        for kind in ["chat", "alert", "report", "event", "clinical"] {
            assert_eq!(validate(kind, Priority::Normal, "\"any JSON\"", NOW), Ok(()));
        }
    }

    #[test]
    fn vitals_are_checked_field_by_field() {
        assert_eq!(check("clinical.vitals", vitals()), Ok(()));
        let v = "clinical.vitals";
        assert_eq!(field(v, with(vitals(), &["bp", "systolic"], json!(400))), "bp.systolic");
        assert_eq!(field(v, with(vitals(), &["bp", "diastolic"], json!(140))), "bp.diastolic", "above systolic");
        assert_eq!(field(v, with(vitals(), &["bp", "unit"], json!("kPa"))), "bp.unit");
        assert_eq!(field(v, without(vitals(), &["bp", "diastolic"])), "bp.diastolic");
        assert_eq!(field(v, with(vitals(), &["pulse", "value"], json!(12))), "pulse.value");
        assert_eq!(field(v, with(vitals(), &["spo2", "value"], json!(101))), "spo2.value");
        assert_eq!(field(v, with(vitals(), &["temperature", "value"], json!(98.6))), "temperature.value", "98.6 °C");
        let fahrenheit = with(vitals(), &["temperature"], json!({"value": 98.6, "unit": "F"}));
        assert_eq!(check(v, fahrenheit), Ok(()), "98.6 °F is plausible");
        assert_eq!(field(v, with(vitals(), &["pulse", "value"], json!("76"))), "pulse.value", "a number, not text");
        assert_eq!(field(v, without(vitals(), &["patient"])), "patient");
        assert_eq!(field(v, with(vitals(), &["patient"], json!("Amina Juma"))), "patient", "a name is not an id");
        assert_eq!(field(v, with(vitals(), &["taken_at"], json!(1_780_000_000))), "taken_at", "seconds");
        assert_eq!(field(v, with(vitals(), &["taken_at"], json!(NOW + 2 * 86_400_000))), "taken_at");
        assert_eq!(field(v, with(vitals(), &["puls"], json!({"value": 70, "unit": "bpm"}))), "puls");
        assert_eq!(field(v, with(vitals(), &["bp", "mean"], json!(99))), "bp.mean");
        let nothing = json!({"patient": "KJ-0042", "taken_at": NOW});
        assert_eq!(field(v, nothing), "bp", "at least one reading");
        let one = json!({"patient": "KJ-0042", "taken_at": NOW, "respiratory_rate": {"value": 18, "unit": "/min"}});
        assert_eq!(check(v, one), Ok(()));
    }

    #[test]
    fn an_emergency_needs_severity_place_and_what_happened_at_emergency_priority() {
        let e = json!({"severity": "critical", "patient": "KJ-0042", "location": "Ward 2, bed 4",
                       "what": "post-partum haemorrhage, ~1 L", "text": "PPH ward 2"});
        assert_eq!(check("clinical.emergency", e.clone()), Ok(()));
        assert_eq!(check("clinical.emergency", without(e.clone(), &["patient"])), Ok(()), "patient optional");
        assert_eq!(field("clinical.emergency", with(e.clone(), &["severity"], json!("bad"))), "severity");
        assert_eq!(field("clinical.emergency", without(e.clone(), &["location"])), "location");
        assert_eq!(field("clinical.emergency", with(e.clone(), &["what"], json!("  "))), "what");
        let err = validate("clinical.emergency", Priority::Normal, &e.to_string(), NOW).err().map(|e| e.field);
        assert_eq!(err.as_deref(), Some("priority"));
    }

    #[test]
    fn a_medication_names_drug_dose_route_and_time() {
        let m = json!({"patient": "KJ-0042", "drug": "oxytocin", "dose": {"value": 10, "unit": "IU"},
                       "route": "im", "given_at": NOW - 300_000});
        assert_eq!(check("clinical.medication", m.clone()), Ok(()));
        assert_eq!(field("clinical.medication", with(m.clone(), &["dose", "value"], json!(0))), "dose.value");
        assert_eq!(field("clinical.medication", with(m.clone(), &["dose", "unit"], json!("spoon"))), "dose.unit");
        assert_eq!(field("clinical.medication", without(m.clone(), &["dose"])), "dose");
        assert_eq!(field("clinical.medication", with(m.clone(), &["route"], json!("IM"))), "route");
        assert_eq!(field("clinical.medication", without(m.clone(), &["given_at"])), "given_at");
        assert_eq!(field("clinical.medication", with(m, &["drug"], json!("x".repeat(201)))), "drug");
    }

    #[test]
    fn a_handoff_names_both_people_and_its_open_tasks() {
        let h = json!({"from": "amina", "to": "baraka", "open_tasks": [
            {"task": "recheck BP at 18:00", "patient": "KJ-0042", "due_at": NOW + 3_600_000},
            {"task": "restock ORS"}]});
        assert_eq!(check("clinical.handoff", h.clone()), Ok(()));
        assert_eq!(check("clinical.handoff", without(h.clone(), &["open_tasks"])), Ok(()));
        assert_eq!(field("clinical.handoff", with(h.clone(), &["to"], json!("Dr Baraka"))), "to");
        let bad_task = with(h.clone(), &["open_tasks"], json!([{"task": "x"}, {"patient": "KJ-1"}]));
        assert_eq!(field("clinical.handoff", bad_task), "open_tasks.1.task");
        let extra = with(h.clone(), &["open_tasks"], json!([{"task": "x", "owner": "me"}]));
        assert_eq!(field("clinical.handoff", extra), "open_tasks.0.owner");
        let many = with(h, &["open_tasks"], json!(vec![json!({"task": "t"}); MAX_TASKS + 1]));
        assert_eq!(field("clinical.handoff", many), "open_tasks");
    }

    #[test]
    fn a_referral_names_where_why_and_how_urgent() {
        let r = json!({"patient": "KJ-0042", "to": "District hospital, maternity",
                       "reason": "prolonged labour", "urgency": "urgent", "transport": "motorbike ambulance"});
        assert_eq!(check("clinical.referral", r.clone()), Ok(()));
        assert_eq!(field("clinical.referral", with(r.clone(), &["urgency"], json!("asap"))), "urgency");
        assert_eq!(field("clinical.referral", without(r, &["reason"])), "reason");
    }

    #[test]
    fn a_body_that_is_not_an_object_is_refused_by_name() {
        for kind in KINDS {
            let e = validate(kind, Priority::Emergency, "[1,2]", NOW).err();
            assert_eq!(e.map(|e| e.field).as_deref(), Some("body"), "{kind}");
        }
    }

    #[test]
    fn the_refusal_says_the_kind_the_field_and_the_problem() {
        let e = check("clinical.vitals", with(vitals(), &["bp", "systolic"], json!(400))).err();
        assert_eq!(
            e.map(|e| e.to_string()).as_deref(),
            Some("clinical.vitals: field `bp.systolic` must be between 40 and 300 mmHg (got 400)")
        );
    }

    #[test]
    fn a_booking_names_the_doctors_queue_the_patient_why_and_how_urgent() {
        let book =
            json!({"queue": "dr-neema", "patient": "KJ-0042", "reason": "cough for three weeks", "urgency": "soon"});
        assert_eq!(field("queue.book", book.clone()), "accepted");
        for f in ["queue", "patient", "reason", "urgency"] {
            assert_eq!(field("queue.book", without(book.clone(), &[f])), f);
        }
        assert_eq!(field("queue.book", with(book.clone(), &["queue"], json!("Dr Neema"))), "queue");
        assert_eq!(field("queue.book", with(book.clone(), &["patient"], json!("Mama Asha"))), "patient");
        assert_eq!(field("queue.book", with(book.clone(), &["urgency"], json!("emergency"))), "urgency");
        assert_eq!(field("queue.book", with(book, &["when"], json!(NOW))), "when");
    }

    #[test]
    fn an_update_names_its_booking_and_a_status_or_urgency() {
        let b = "0190a7c4-8f6e-7c3a-9a55-2b1d3c4e5f60";
        let ok = |v: Value| field("queue.update", v);
        assert_eq!(ok(json!({"queue": "dr-neema", "booking": b, "status": "completed"})), "accepted");
        assert_eq!(ok(json!({"queue": "dr-neema", "booking": b, "urgency": "urgent"})), "accepted");
        assert_eq!(ok(json!({"queue": "dr-neema", "booking": b})), "status");
        assert_eq!(ok(json!({"queue": "dr-neema", "booking": "first one", "status": "confirmed"})), "booking");
        assert_eq!(ok(json!({"queue": "dr-neema", "booking": b, "status": "booked"})), "status");
        // A reschedule needs its time, which may be weeks ahead but not years.
        assert_eq!(ok(json!({"queue": "dr-neema", "booking": b, "status": "rescheduled"})), "due_at");
        let in_a_month = NOW + 30 * 86_400_000;
        assert_eq!(
            ok(json!({"queue": "dr-neema", "booking": b, "status": "rescheduled", "due_at": in_a_month})),
            "accepted"
        );
        let refused = check(
            "queue.update",
            json!({"queue": "dr-neema", "booking": b, "status": "rescheduled", "due_at": NOW + 400 * 86_400_000}),
        )
        .err()
        .map(|e| e.problem);
        assert_eq!(refused.as_deref(), Some("is more than 366 days in the future"));
    }

    #[test]
    fn a_missed_call_names_the_callee_and_the_call() {
        let call = "0190b2c4-8f6e-7c3a-9a55-2b1d3c4e5f60";
        assert_eq!(field("call.missed", json!({"to": "baraka", "call": call, "video": true})), "accepted");
        assert_eq!(field("call.missed", json!({"call": call})), "to");
        assert_eq!(field("call.missed", json!({"to": "baraka", "call": "yesterday"})), "call");
        assert_eq!(field("call.missed", json!({"to": "baraka", "call": call, "video": "yes"})), "video");
    }

    #[test]
    fn a_record_edit_names_patient_field_value_and_role() {
        let ok = |v: Value| field("record.edit", v);
        let base = json!(["0190a7c4-8f6e-7c3a-9a55-2b1d3c4e5f60"]);
        assert_eq!(
            ok(
                json!({"patient": "KJ-0042", "field": "allergies", "value": "penicillin", "base": base, "role": "worker"})
            ),
            "accepted"
        );
        assert_eq!(
            ok(
                json!({"patient": "KJ-0042", "field": "care_plan.bp-1", "value": {"task": "BP at 18:00", "done": true}, "role": "doctor"})
            ),
            "accepted"
        );
        assert_eq!(
            ok(json!({"patient": "KJ-0042", "field": "care_plan.bp-1", "value": null, "role": "worker"})),
            "accepted"
        );
        assert_eq!(ok(json!({"patient": "KJ-0042", "field": "allergies", "role": "worker"})), "value");
        assert_eq!(ok(json!({"patient": "KJ-0042", "field": "weight", "value": "60", "role": "worker"})), "field");
        assert_eq!(
            ok(json!({"patient": "KJ-0042", "field": "care_plan.BP 1", "value": null, "role": "worker"})),
            "field"
        );
        assert_eq!(
            ok(
                json!({"patient": "KJ-0042", "field": "care_plan.x", "value": {"task": "t", "done": "yes"}, "role": "worker"})
            ),
            "value.done"
        );
        assert_eq!(ok(json!({"patient": "KJ-0042", "field": "allergies", "value": 3, "role": "worker"})), "value");
        assert_eq!(ok(json!({"patient": "KJ-0042", "field": "allergies", "value": "x", "role": "nurse"})), "role");
        assert_eq!(
            ok(json!({"patient": "KJ-0042", "field": "allergies", "value": "x", "base": ["v1"], "role": "worker"})),
            "base.0"
        );
    }
}
