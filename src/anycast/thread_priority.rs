//! Real-time scheduling for the thread that runs the speakers. BFD detects a dead balancer
//! after 300 ms of silence (100 ms × 3), so a packet must leave within tens of milliseconds
//! of its timer. On a busy host a sleeping thread can wait 200 ms and more to be scheduled
//! after its timer fires (measured in the lab: `epoll_wait` with a 23 ms timeout returned after
//! 192 ms while pgbench loaded the proxies), and the router declares the balancer dead although
//! it is fine. Under SCHED_RR the thread runs as soon as it wakes; the speakers use little CPU,
//! and the kernel's real-time throttling bounds what a runaway could take.

use nix::libc;

/// Puts the calling thread under SCHED_RR at `priority` (1..=99). Threads it would fork do
/// not inherit it (SCHED_RESET_ON_FORK). Fails without root or CAP_SYS_NICE (EPERM).
pub fn set_current_thread_round_robin(priority: u8) -> std::io::Result<()> {
    let param = libc::sched_param {
        sched_priority: i32::from(priority),
    };
    // SAFETY: `param` is a valid, initialised sched_param; pid 0 names the calling thread.
    let rc =
        unsafe { libc::sched_setscheduler(0, libc::SCHED_RR | libc::SCHED_RESET_ON_FORK, &param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
