//! The routing section of `pgcast status` as text, in the spirit of `show ip ospf neighbor`.

use std::fmt::Write;

use super::RoutingStatus;

pub fn routing_text(r: &RoutingStatus, s: &mut String) {
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
