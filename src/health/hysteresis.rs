//! Rise/fall debouncing of a probe result, as a pure struct.

/// A backend is declared up after `rise` consecutive good probes and down after `fall`
/// consecutive bad ones. The very first probe decides at once, so a fresh pgcast does not wait
/// `rise` intervals before it can serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hysteresis {
    rise: u32,
    fall: u32,
    up: Option<bool>,
    streak: u32,
    /// A change after the first probe happened (the first probe decides alone).
    changed_once: bool,
}

impl Hysteresis {
    pub fn new(rise: u32, fall: u32) -> Self {
        Hysteresis {
            rise: rise.max(1),
            fall: fall.max(1),
            up: None,
            streak: 0,
            changed_once: false,
        }
    }

    /// Records one probe result; returns true if the up/down state changed.
    pub fn observe(&mut self, ok: bool) -> bool {
        match self.up {
            None => {
                self.up = Some(ok);
                self.streak = 0;
                true
            }
            Some(up) if up == ok => {
                self.streak = 0;
                false
            }
            Some(_) => {
                self.streak += 1;
                let needed = if ok { self.rise } else { self.fall };
                if self.streak >= needed {
                    self.up = Some(ok);
                    self.streak = 0;
                    self.changed_once = true;
                    true
                } else {
                    false
                }
            }
        }
    }

    /// Up after hysteresis; false until the first probe.
    pub fn is_up(&self) -> bool {
        self.up == Some(true)
    }

    /// The debounced state: None until the first probe.
    pub fn state(&self) -> Option<bool> {
        self.up
    }

    /// How many consecutive probes the last change took: the very first probe is 1, then
    /// `rise` when it went up and `fall` when it went down. 0 before the first probe.
    pub fn probes_for_last_change(&self) -> u32 {
        match self.up {
            None => 0,
            Some(_) if !self.changed_once => 1,
            Some(true) => self.rise,
            Some(false) => self.fall,
        }
    }

    /// Changes thresholds (config reload) without losing the current state.
    pub fn set_thresholds(&mut self, rise: u32, fall: u32) {
        self.rise = rise.max(1);
        self.fall = fall.max(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_probe_decides() {
        let mut h = Hysteresis::new(3, 3);
        assert!(!h.is_up());
        assert!(h.observe(true));
        assert!(h.is_up());
    }

    #[test]
    fn fall_after_consecutive_failures_only() {
        let mut h = Hysteresis::new(2, 3);
        h.observe(true);
        assert!(!h.observe(false));
        assert!(!h.observe(false));
        assert!(!h.observe(true), "a success resets the streak");
        assert!(!h.observe(false));
        assert!(!h.observe(false));
        assert!(h.is_up());
        assert!(h.observe(false));
        assert!(!h.is_up());
    }

    #[test]
    fn probes_for_last_change() {
        let mut h = Hysteresis::new(2, 3);
        assert_eq!((h.state(), h.probes_for_last_change()), (None, 0));
        h.observe(true);
        assert_eq!((h.state(), h.probes_for_last_change()), (Some(true), 1));
        for _ in 0..3 {
            h.observe(false);
        }
        assert_eq!((h.state(), h.probes_for_last_change()), (Some(false), 3));
        h.observe(true);
        h.observe(true);
        assert_eq!((h.state(), h.probes_for_last_change()), (Some(true), 2));
    }

    #[test]
    fn rise_after_consecutive_successes() {
        let mut h = Hysteresis::new(2, 1);
        h.observe(false);
        assert!(!h.observe(true));
        assert!(!h.is_up());
        assert!(h.observe(true));
        assert!(h.is_up());
    }
}
