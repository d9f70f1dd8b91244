//! A session's backend connections, indexed by [`Target`], so code says which side it means
//! once instead of matching on it at every use.

use super::plan::SlotFacts;
use super::router::Target;
use super::slot::Slot;
use super::ProxyError;

/// At most one connection per target. Boxed: a session between transactions holds none, and
/// its idle future should not carry room for two.
#[derive(Default)]
pub struct Slots {
    primary: Option<Box<Slot>>,
    replica: Option<Box<Slot>>,
}

impl Slots {
    pub fn get(&self, target: Target) -> Option<&Slot> {
        self.entry(target).as_deref()
    }

    pub fn get_mut(&mut self, target: Target) -> Option<&mut Slot> {
        self.entry_mut(target).as_deref_mut()
    }

    /// The connection a step is about to use; gone (the backend closed it meanwhile) is an
    /// error.
    pub fn open_mut(&mut self, target: Target) -> Result<&mut Slot, ProxyError> {
        self.get_mut(target)
            .ok_or_else(|| ProxyError::BackendUnavailable("connection vanished".into()))
    }

    /// Removes and returns the connection (dropping it closes it, unless it goes to the pool).
    pub fn take(&mut self, target: Target) -> Option<Slot> {
        self.entry_mut(target).take().map(|s| *s)
    }

    pub fn set(&mut self, target: Target, slot: Slot) {
        *self.entry_mut(target) = Some(Box::new(slot));
    }

    pub fn is_open(&self, target: Target) -> bool {
        self.get(target).is_some()
    }

    /// The open connections, primary first (the order replies are looked for).
    pub fn iter(&self) -> impl Iterator<Item = (Target, &Slot)> {
        [
            (Target::Primary, &self.primary),
            (Target::Replica, &self.replica),
        ]
        .into_iter()
        .filter_map(|(t, s)| s.as_deref().map(|s| (t, s)))
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (Target, &mut Slot)> {
        [
            (Target::Primary, &mut self.primary),
            (Target::Replica, &mut self.replica),
        ]
        .into_iter()
        .filter_map(|(t, s)| s.as_deref_mut().map(|s| (t, s)))
    }

    /// Both entries at once, for reading from both connections concurrently.
    pub fn both_mut(&mut self) -> (&mut Option<Box<Slot>>, &mut Option<Box<Slot>>) {
        (&mut self.primary, &mut self.replica)
    }

    /// What routing needs to know about one connection.
    pub fn facts(&self, target: Target) -> SlotFacts {
        match self.get(target) {
            None => SlotFacts::default(),
            Some(s) => SlotFacts {
                open: true,
                busy: !s.idle(),
                in_transaction: s.in_transaction(),
                open_unit: s.has_open_unit(),
            },
        }
    }

    fn entry(&self, target: Target) -> &Option<Box<Slot>> {
        match target {
            Target::Primary => &self.primary,
            Target::Replica => &self.replica,
        }
    }

    fn entry_mut(&mut self, target: Target) -> &mut Option<Box<Slot>> {
        match target {
            Target::Primary => &mut self.primary,
            Target::Replica => &mut self.replica,
        }
    }
}
