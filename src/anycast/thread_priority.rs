//! Real-time scheduling for the thread that runs the speakers. BFD detects a dead balancer
//! after 300 ms of silence (100 ms × 3), so a packet must leave within tens of milliseconds
//! of its timer. On a busy host a sleeping thread can wait 200 ms and more to be scheduled
//! after its timer fires (measured in the lab: `epoll_wait` with a 23 ms timeout returned after
//! 192 ms while pgbench loaded the proxies), and the router declares the balancer dead although
//! it is fine. Under SCHED_RR the thread runs as soon as it wakes; the speakers use little CPU,
//! and the kernel's real-time throttling bounds what a runaway could take.

// The system call itself is in crate::sys, with the crate's other `unsafe` code; this module
// keeps the path the daemon uses.
pub use crate::sys::set_current_thread_round_robin;
