//! A field of a partial update (PATCH) that may be left out, set to
//! `null`, or given: three cases an `Option` cannot tell apart.

use serde::Deserialize;

/// A field that may be absent (unchanged), `null` (cleared) or a value.
/// Fields of this type need `#[serde(default)]`.
#[derive(Debug, Default)]
pub enum Patch<T> {
    #[default]
    Absent,
    Null,
    Value(T),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Patch<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Option::<T>::deserialize(deserializer)?.map_or(Patch::Null, Patch::Value))
    }
}

impl<T> Patch<T> {
    /// Applies the change to the field it patches.
    pub fn apply_to(self, target: &mut Option<T>) {
        match self {
            Patch::Absent => {}
            Patch::Null => *target = None,
            Patch::Value(value) => *target = Some(value),
        }
    }
}
