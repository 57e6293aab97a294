//! A patient's shared record, merged from edits (docs/workflows.md, "A shared patient
//! record").
//!
//! Phones edit a record offline and doctors at the cloud; every edit is a `record.edit`
//! message naming one field, its new value, and the versions of that field its author
//! was looking at (`base`). A record's state is the **set** of its edits: merging two
//! replicas is the union of their sets ([`Edits::merge`]), which is commutative,
//! associative and idempotent by construction, and [`Edits::view`] is a function of the
//! set alone, so every replica that saw the same edits shows the same record whatever
//! order they arrived in. Nothing is overwritten: every version stays in the set.
//!
//! Per field, the versions no other edit was made on top of are its *candidates*. One
//! candidate is the field's value. Two or more are concurrent edits (made without seeing
//! each other): the newest by stamp is shown, the others with it as a conflict, until
//! someone resolves it by editing on top of all of them. In a field the deployment marks
//! as the doctor's (`policy.record_doctor_fields`) a doctor's candidate wins over
//! concurrent edits by anyone else: the server's side wins there, and no conflict is
//! shown unless two doctors disagree.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::MessageId;

/// The kind of an edit.
pub const EDIT: &str = "record.edit";
/// Text fields of a record.
pub const TEXT_FIELDS: [&str; 2] = ["problems", "allergies"];
/// The prefix of a care-plan checklist item's field: `care_plan.<key>`.
pub const CARE_PLAN: &str = "care_plan.";
/// Most versions one edit may be made on top of.
pub const MAX_BASE: usize = 32;
/// Versions a view lists in `history`, newest first.
pub const HISTORY_SHOWN: usize = 200;

/// One edit as the merge needs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Edit {
    /// The message id: the version's name.
    pub version: MessageId,
    /// The stamp (`msg.hlc`).
    pub hlc: u64,
    pub by: String,
    /// The author's role, as the server checked it at `send`.
    pub role: String,
    pub patient: String,
    pub field: String,
    /// `null` clears the field (removes a checklist item).
    pub value: Value,
    /// The versions of this field the author saw: this edit replaces them.
    pub base: Vec<MessageId>,
}

#[derive(Deserialize)]
struct Body {
    patient: String,
    field: String,
    #[serde(default)]
    value: Value,
    #[serde(default)]
    base: Vec<MessageId>,
    role: String,
}

impl Edit {
    /// An edit from a stored message; `None` for another kind or a body that does not
    /// parse (a sealed envelope, a newer schema).
    pub fn from_message(id: MessageId, hlc: u64, from: &str, kind: &str, body: &str) -> Option<Self> {
        if kind != EDIT {
            return None;
        }
        let b: Body = serde_json::from_str(body).ok()?;
        Some(Self {
            version: id,
            hlc,
            by: from.to_owned(),
            role: b.role,
            patient: b.patient,
            field: b.field,
            value: b.value,
            base: b.base,
        })
    }

    fn order(&self) -> (u64, MessageId) {
        (self.hlc, self.version)
    }
}

/// The role an edit of `kind` with `body` says its author has, which a server compares
/// with the sender's token at `send`.
pub fn claimed_role(kind: &str, body: &str) -> Option<String> {
    if kind != EDIT {
        return None;
    }
    serde_json::from_str::<Body>(body).ok().map(|b| b.role)
}

/// A record's state: every edit of it, by version. Merging is set union.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Edits(BTreeMap<MessageId, Edit>);

/// One version as a view shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Version {
    pub version: MessageId,
    pub value: Value,
    pub by: String,
    pub role: String,
    /// The stamp's time, ms since 1970.
    pub at: u64,
}

/// A field's value and, when there are concurrent candidates, all of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Field {
    pub field: String,
    /// The shown version (the newest candidate; a doctor's first in a doctor's field).
    #[serde(flatten)]
    pub current: Version,
    /// Whether the deployment marks this field as the doctor's.
    pub doctors: bool,
    /// Every candidate, newest first, when there is more than one; empty otherwise. A new
    /// edit with `base` naming all of them resolves the conflict.
    pub conflict: Vec<Version>,
    /// The versions to name as `base` in the next edit of this field.
    pub base: Vec<MessageId>,
    /// How many versions of this field are kept.
    pub versions: usize,
}

/// What a reader of the record sees.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct View {
    pub patient: String,
    /// By field name. A cleared field is listed with value `null` (a reader hides it), so
    /// that the next edit of it names what it replaces.
    pub fields: Vec<Field>,
    /// Every version of every field, newest first, at most [`HISTORY_SHOWN`].
    pub history: Vec<Past>,
}

/// A version in the record's history, with its field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Past {
    pub field: String,
    #[serde(flatten)]
    pub version: Version,
}

impl Edits {
    pub fn new(edits: impl IntoIterator<Item = Edit>) -> Self {
        let mut s = Self::default();
        for e in edits {
            s.insert(e);
        }
        s
    }

    /// Adds an edit; one already held (the same version) is kept as it was.
    pub fn insert(&mut self, e: Edit) {
        self.0.entry(e.version).or_insert(e);
    }

    /// The union of two replicas' edits.
    #[must_use]
    pub fn merge(&self, other: &Self) -> Self {
        let mut out = self.clone();
        for e in other.0.values() {
            out.insert(e.clone());
        }
        out
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The record of `patient` as it reads, with `doctor_fields` marked as the doctor's.
    pub fn view(&self, patient: &str, doctor_fields: &[String]) -> View {
        let mut by_field: BTreeMap<&str, Vec<&Edit>> = BTreeMap::new();
        for e in self.0.values().filter(|e| e.patient == patient) {
            by_field.entry(e.field.as_str()).or_default().push(e);
        }
        let mut fields = Vec::new();
        for (name, edits) in &by_field {
            let replaced: BTreeSet<MessageId> = edits.iter().flat_map(|e| e.base.iter().copied()).collect();
            let mut candidates: Vec<&Edit> = edits.iter().copied().filter(|e| !replaced.contains(&e.version)).collect();
            let doctors = doctor_fields.iter().any(|f| f == name);
            if doctors && candidates.iter().any(|e| e.role == "doctor") {
                candidates.retain(|e| e.role == "doctor");
            }
            candidates.sort_by_key(|e| std::cmp::Reverse(e.order()));
            let Some(newest) = candidates.first() else { continue };
            let conflict =
                if candidates.len() > 1 { candidates.iter().map(|e| version(e)).collect() } else { Vec::new() };
            // The next edit replaces every version not yet replaced, a doctor's winner
            // and the candidates it won over alike.
            let base = edits.iter().filter(|e| !replaced.contains(&e.version)).map(|e| e.version).collect();
            fields.push(Field {
                field: (*name).to_owned(),
                current: version(newest),
                doctors,
                conflict,
                base,
                versions: edits.len(),
            });
        }
        let mut history: Vec<&Edit> = self.0.values().filter(|e| e.patient == patient).collect();
        history.sort_by_key(|e| std::cmp::Reverse(e.order()));
        let history = history
            .into_iter()
            .take(HISTORY_SHOWN)
            .map(|e| Past { field: e.field.clone(), version: version(e) })
            .collect();
        View { patient: patient.to_owned(), fields, history }
    }
}

fn version(e: &Edit) -> Version {
    Version {
        version: e.version,
        value: e.value.clone(),
        by: e.by.clone(),
        role: e.role.clone(),
        at: crate::Hlc(e.hlc).physical_ms(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const T0: u64 = 1_780_000_000_000;
    const DOCTOR_FIELDS: &[&str] = &["problems"];

    fn doctor_fields() -> Vec<String> {
        DOCTOR_FIELDS.iter().map(|s| (*s).to_owned()).collect()
    }

    /// One replica: a phone or a server, with its own clock.
    struct Replica {
        edits: Edits,
        clock: u64,
    }

    impl Replica {
        fn new(clock: u64) -> Self {
            Self { edits: Edits::default(), clock }
        }

        /// Edits `field` on top of what this replica shows of it.
        fn edit(&mut self, by: &str, role: &str, field: &str, value: Value) -> MessageId {
            self.clock += 1;
            let base = self
                .edits
                .view("KJ-0042", &doctor_fields())
                .fields
                .into_iter()
                .find(|f| f.field == field)
                .map(|f| f.base)
                .unwrap_or_default();
            let version = MessageId(uuid::Uuid::now_v7());
            self.edits.insert(Edit {
                version,
                hlc: crate::Hlc::new(T0 + self.clock, 0).0,
                by: by.into(),
                role: role.into(),
                patient: "KJ-0042".into(),
                field: field.into(),
                value,
                base,
            });
            version
        }

        fn sync_from(&mut self, other: &Replica) {
            self.edits = self.edits.merge(&other.edits);
            self.clock = self.clock.max(other.clock);
        }

        fn field(&self, name: &str) -> Option<Field> {
            self.edits.view("KJ-0042", &doctor_fields()).fields.into_iter().find(|f| f.field == name)
        }
    }

    #[test]
    fn sequential_edits_show_the_newest_and_keep_every_version() {
        let mut phone = Replica::new(0);
        phone.edit("amina", "worker", "allergies", json!("penicillin"));
        phone.edit("amina", "worker", "allergies", json!("penicillin, sulfa"));
        let f = phone.field("allergies").unwrap_or_else(|| panic!("no allergies"));
        assert_eq!(f.current.value, json!("penicillin, sulfa"));
        assert!(f.conflict.is_empty());
        assert_eq!(f.versions, 2);
        assert_eq!(phone.edits.view("KJ-0042", &[]).history.len(), 2);
    }

    #[test]
    fn two_offline_edits_of_one_field_are_kept_as_a_conflict_until_someone_resolves_it() {
        let mut hub = Replica::new(0);
        hub.edit("amina", "worker", "allergies", json!("penicillin"));
        let (mut a, mut b) = (Replica::new(0), Replica::new(0));
        a.sync_from(&hub);
        b.sync_from(&hub);
        a.edit("amina", "worker", "allergies", json!("penicillin, sulfa"));
        b.edit("baraka", "worker", "allergies", json!("penicillin, latex"));
        hub.sync_from(&a);
        hub.sync_from(&b);
        let f = hub.field("allergies").unwrap_or_else(|| panic!("no allergies"));
        let values: Vec<&Value> = f.conflict.iter().map(|v| &v.value).collect();
        assert_eq!(values.len(), 2, "both kept: {values:?}");
        assert!(values.contains(&&json!("penicillin, sulfa")) && values.contains(&&json!("penicillin, latex")));
        assert_eq!(f.base.len(), 2);
        // The next person to open it resolves it: one edit on top of both.
        hub.edit("dr-neema", "doctor", "allergies", json!("penicillin, sulfa, latex"));
        let f = hub.field("allergies").unwrap_or_else(|| panic!("no allergies"));
        assert_eq!(f.current.value, json!("penicillin, sulfa, latex"));
        assert!(f.conflict.is_empty());
        assert_eq!(f.versions, 4, "every version is kept");
    }

    #[test]
    fn in_a_doctors_field_the_doctors_concurrent_edit_wins_without_a_conflict() {
        let (mut phone, mut cloud) = (Replica::new(0), Replica::new(0));
        cloud.edit("dr-neema", "doctor", "problems", json!("pre-eclampsia"));
        // The phone's edit is newer by clock, but made without seeing the doctor's.
        phone.clock = 50;
        phone.edit("amina", "worker", "problems", json!("high blood pressure"));
        cloud.sync_from(&phone);
        let f = cloud.field("problems").unwrap_or_else(|| panic!("no problems"));
        assert!(f.doctors);
        assert_eq!(f.current.value, json!("pre-eclampsia"));
        assert!(f.conflict.is_empty());
        assert_eq!(f.base.len(), 2, "the next edit replaces both");
        // In an ordinary field the same two edits are a conflict, the newest shown.
        let (mut phone, mut cloud) = (Replica::new(0), Replica::new(0));
        cloud.edit("dr-neema", "doctor", "allergies", json!("none known"));
        phone.clock = 50;
        phone.edit("amina", "worker", "allergies", json!("penicillin"));
        cloud.sync_from(&phone);
        let f = cloud.field("allergies").unwrap_or_else(|| panic!("no allergies"));
        assert_eq!((f.current.value.clone(), f.conflict.len()), (json!("penicillin"), 2));
    }

    #[test]
    fn a_cleared_checklist_item_reads_null_and_stays_in_the_history() {
        let mut phone = Replica::new(0);
        phone.edit("amina", "worker", "care_plan.bp-check", json!({"task": "BP at 18:00"}));
        phone.edit("amina", "worker", "care_plan.bp-check", json!({"task": "BP at 18:00", "done": true}));
        assert_eq!(phone.field("care_plan.bp-check").map(|f| f.current.value["done"].clone()), Some(json!(true)));
        phone.edit("amina", "worker", "care_plan.bp-check", Value::Null);
        let f = phone.field("care_plan.bp-check").unwrap_or_else(|| panic!("listed"));
        assert_eq!((f.current.value.clone(), f.conflict.len()), (Value::Null, 0));
        // Added again on top of the removal: one version, no conflict with the removal.
        phone.edit("amina", "worker", "care_plan.bp-check", json!({"task": "BP at 20:00"}));
        let f = phone.field("care_plan.bp-check").unwrap_or_else(|| panic!("listed"));
        assert_eq!((f.current.value["task"].clone(), f.conflict.len()), (json!("BP at 20:00"), 0));
        assert_eq!(phone.edits.view("KJ-0042", &[]).history.len(), 4);
    }

    #[test]
    fn edits_of_another_patient_or_kind_are_not_this_records() {
        let id = MessageId(uuid::Uuid::now_v7());
        let body = json!({"patient": "KJ-0001", "field": "allergies", "value": "x", "role": "worker"}).to_string();
        assert!(Edit::from_message(id, 1, "amina", "chat", &body).is_none());
        let e = Edit::from_message(id, 1, "amina", EDIT, &body).unwrap_or_else(|| panic!("parses"));
        assert!(Edits::new([e]).view("KJ-0042", &[]).fields.is_empty());
        assert_eq!(claimed_role(EDIT, &body).as_deref(), Some("worker"));
        assert_eq!(claimed_role("chat", &body), None);
    }

    /// What a random session does: edit on a replica (on top of what it shows), or sync
    /// one replica from another.
    #[derive(Debug, Clone)]
    enum Op {
        Edit { replica: usize, field: usize, value: u8, doctor: bool },
        Sync { from: usize, to: usize },
    }

    fn ops() -> impl Strategy<Value = Vec<Op>> {
        let op =
            prop_oneof![
                (0usize..3, 0usize..3, any::<u8>(), any::<bool>())
                    .prop_map(|(replica, field, value, doctor)| Op::Edit { replica, field, value, doctor }),
                (0usize..3, 0usize..3).prop_map(|(from, to)| Op::Sync { from, to }),
            ];
        prop::collection::vec(op, 1..40)
    }

    /// Three replicas (two phones and the cloud) after `ops`.
    fn run(ops: &[Op]) -> Vec<Replica> {
        let mut replicas: Vec<Replica> = (0..3).map(|i| Replica::new(i * 7)).collect();
        let fields = ["allergies", "problems", "care_plan.a"];
        for op in ops {
            match *op {
                Op::Edit { replica, field, value, doctor } => {
                    let (by, role) = if doctor { ("dr-neema", "doctor") } else { ("amina", "worker") };
                    let v = if value == 0 {
                        Value::Null
                    } else if field == 2 {
                        json!({"task": format!("t{value}")})
                    } else {
                        json!(format!("v{value}"))
                    };
                    replicas[replica].edit(by, role, fields[field], v);
                }
                Op::Sync { from, to } if from != to => {
                    let src = Replica { edits: replicas[from].edits.clone(), clock: replicas[from].clock };
                    replicas[to].sync_from(&src);
                }
                Op::Sync { .. } => {}
            }
        }
        replicas
    }

    proptest! {
        #[test]
        fn merging_is_commutative_associative_and_idempotent(ops in ops()) {
            let r = run(&ops);
            let (a, b, c) = (&r[0].edits, &r[1].edits, &r[2].edits);
            prop_assert_eq!(a.merge(b), b.merge(a));
            prop_assert_eq!(a.merge(b).merge(c), a.merge(&b.merge(c)));
            prop_assert_eq!(a.merge(a), a.clone());
            let df = doctor_fields();
            prop_assert_eq!(a.merge(b).view("KJ-0042", &df), b.merge(a).view("KJ-0042", &df));
        }

        /// Replicas that saw the same edits, in whatever order, show the same record.
        #[test]
        fn the_same_edits_in_any_order_show_the_same_record(ops in ops(), seed in any::<u64>()) {
            let r = run(&ops);
            let all = r[0].edits.merge(&r[1].edits).merge(&r[2].edits);
            let mut shuffled: Vec<Edit> = all.0.values().cloned().collect();
            let mut rng = seed;
            for i in (1..shuffled.len()).rev() {
                rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                shuffled.swap(i, (rng >> 33) as usize % (i + 1));
            }
            // Delivered twice over, as a resend after a cut link would.
            let again = shuffled.iter().rev().cloned().collect::<Vec<_>>();
            let other = Edits::new(shuffled.into_iter().chain(again));
            let df = doctor_fields();
            prop_assert_eq!(all.view("KJ-0042", &df), other.view("KJ-0042", &df));
            // Every version is kept, and each field shows one of its candidates.
            prop_assert_eq!(other.len(), all.len());
            for f in all.view("KJ-0042", &df).fields {
                prop_assert!(f.conflict.is_empty() || f.conflict.contains(&f.current));
            }
        }
    }
}
