//! Where a training step's time goes: the wall time between marks placed in the loop, summed per
//! phase over the steps. Only when the reporter asks for it (`ddpm bench --profile`); on CUDA each mark
//! first waits for the device, so that a phase's time is the time of its own kernels.
use std::time::Instant;
use tch::Device;

pub struct Phases {
    device: Device,
    last: Instant,
    /// Phase name and total seconds, in the order the phases first ran.
    pub totals: Vec<(&'static str, f64)>,
}

impl Phases {
    pub fn new(device: Device) -> Self {
        Self { device, last: Instant::now(), totals: Vec::new() }
    }

    /// The time since the previous mark belongs to `phase`.
    pub fn mark(&mut self, phase: &'static str) {
        crate::device::synchronize(self.device);
        let now = Instant::now();
        let seconds = (now - self.last).as_secs_f64();
        self.last = now;
        match self.totals.iter_mut().find(|(p, _)| *p == phase) {
            Some((_, total)) => *total += seconds,
            None => self.totals.push((phase, seconds)),
        }
    }

    /// Forgets what was measured so far (the warm-up steps).
    pub fn reset(&mut self) {
        self.totals.clear();
        self.last = Instant::now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_between_marks_goes_to_the_named_phase() {
        let mut p = Phases::new(Device::Cpu);
        for _ in 0..2 {
            std::thread::sleep(std::time::Duration::from_millis(20));
            p.mark("a");
            p.mark("b");
        }
        assert_eq!(p.totals.iter().map(|(n, _)| *n).collect::<Vec<_>>(), ["a", "b"]);
        assert!(p.totals[0].1 >= 0.040 && p.totals[0].1 < 0.5, "{:?}", p.totals);
        assert!(p.totals[1].1 < 0.005, "{:?}", p.totals);
        p.reset();
        assert!(p.totals.is_empty());
    }
}
