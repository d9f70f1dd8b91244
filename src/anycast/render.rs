//! The routing section of `pgcast status` as text, in the spirit of `show ip ospf neighbor`.

use std::fmt::Write;

use super::AnycastStatus;

pub fn routing_text(r: &AnycastStatus, s: &mut String) {
    let _ = writeln!(s, "\nAnycast prefixes");
    if r.prefixes.is_empty() {
        let _ = writeln!(s, "  none configured");
    }
    for p in &r.prefixes {
        let _ = writeln!(
            s,
            "  {}/{:<3} {:<10} cost {:<5} {}",
            p.prefix,
            p.prefix_len,
            if p.announce { "ANNOUNCED" } else { "WITHDRAWN" },
            p.cost,
            p.reason
        );
    }
    bgp_text(r, s);
    bfd_text(r, s);
    if let Some(t) = &r.timer_lag {
        let _ = writeln!(
            s,
            "\nRouting thread: {}; timers late by at most {:.1} ms in the last minute, {} more than {} ms late since start",
            t.scheduling,
            t.max_ms_last_minute,
            t.late_total,
            super::timer_lag::LATE.as_millis()
        );
    }
    let Some(o) = &r.ospf else {
        let _ = writeln!(s, "\nOSPF: not configured");
        return;
    };
    let _ = writeln!(
        s,
        "\nOSPF router-id {} area {}; LSDB {} LSAs",
        o.router_id, o.area_id, o.lsdb_size
    );
    for i in &o.interfaces {
        let _ = writeln!(
            s,
            "  interface {} {:?} state {:?} DR {} BDR {} cost {}",
            i.name, i.network_type, i.state, i.dr, i.bdr, i.cost
        );
        let _ = writeln!(
            s,
            "    {:<16} {:<16} {:<4} {:<10} {:>8}",
            "neighbor", "address", "pri", "state", "dead in"
        );
        for n in &i.neighbors {
            let _ = writeln!(
                s,
                "    {:<16} {:<16} {:<4} {:<10} {:>7.1}s",
                n.router_id.to_string(),
                n.address.to_string(),
                n.priority,
                format!("{:?}", n.state),
                n.dead_timer_ms as f64 / 1000.0
            );
        }
    }
    for l in &o.own_lsas {
        let _ = writeln!(
            s,
            "  own LSA type {} id {} seq {} age {}",
            l.ls_type, l.ls_id, l.seq, l.age
        );
    }
    if let Some(ms) = o.pending_origination_ms {
        let _ = writeln!(
            s,
            "  origination pending for {ms} ms (MinLSInterval since the previous one)"
        );
    }
    if !o.dropped.is_empty() {
        let dropped: Vec<String> = o.dropped.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(s, "  dropped packets: {}", dropped.join(", "));
    }
}

fn bgp_text(r: &AnycastStatus, s: &mut String) {
    let Some(b) = &r.bgp else {
        let _ = writeln!(s, "\nBGP: not configured");
        return;
    };
    let id = b.router_id.map(|i| i.to_string()).unwrap_or_default();
    let _ = writeln!(s, "\nBGP AS {} router-id {id}", b.local_as);
    let r = &b.refused_connections;
    if r.not_a_neighbor + r.neighbor_busy + r.accept_failed > 0 {
        let _ = writeln!(
            s,
            "  connections closed at once: not a neighbor {}, neighbor busy {}, accept failed {}",
            r.not_a_neighbor, r.neighbor_busy, r.accept_failed
        );
    }
    let _ = writeln!(
        s,
        "  {:<16} {:<10} {:<12} {:>8} {:>5} {:>7} {:>7}  prefixes",
        "neighbor", "AS", "state", "up", "hold", "msg in", "msg out"
    );
    for n in &b.neighbors {
        let up = n
            .uptime_s
            .map(|u| format!("{u}s"))
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(
            s,
            "  {:<16} {:<10} {:<12} {:>8} {:>5} {:>7} {:>7}  {}{}",
            n.address.to_string(),
            n.remote_as,
            n.state,
            up,
            n.hold_time,
            n.messages_in,
            n.messages_out,
            if n.sent.is_empty() {
                "-".to_string()
            } else {
                n.sent.join(" ")
            },
            if n.graceful_shutdown {
                " (GRACEFUL_SHUTDOWN)"
            } else {
                ""
            }
        );
        for p in n.prefixes.iter().filter(|p| !p.announced) {
            let _ = writeln!(s, "    {} not announced: {}", p.prefix, p.reason);
        }
        if let Some(e) = &n.last_error {
            let _ = writeln!(s, "    last error: {e}");
        }
    }
}

fn bfd_text(r: &AnycastStatus, s: &mut String) {
    let Some(b) = &r.bfd else { return };
    let _ = writeln!(
        s,
        "\nBFD{}",
        if b.admin_down {
            " (administratively down: draining)"
        } else {
            ""
        }
    );
    for x in &b.sessions {
        let _ = writeln!(
            s,
            "  {:<16} from {:<16} {:<9} remote {:<9} tx {} ms detect {} diag {:?}/{:?} ({})",
            x.peer.to_string(),
            x.local.to_string(),
            format!("{:?}", x.state),
            format!("{:?}", x.remote_state),
            x.tx_interval_ms,
            x.detect_time_ms
                .map_or("-".to_string(), |d| format!("{d} ms")),
            x.local_diag,
            x.remote_diag,
            x.owners.iter().cloned().collect::<Vec<_>>().join(", ")
        );
    }
}
