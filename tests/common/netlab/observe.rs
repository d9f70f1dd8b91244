//! Waiting for a condition, the diagnostics printed when it does not come, and reading
//! `pgcast status --json`.

use super::*;

impl NetLab {
    /// Polls `pred` until it holds; panics with [`diagnostics`](Self::diagnostics) after
    /// `timeout`. Returns how long it took.
    pub fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        mut pred: impl FnMut(&NetLab) -> bool,
    ) -> Duration {
        match poll_until(timeout, || pred(self)) {
            Some(d) => d,
            None => panic!(
                "not reached within {timeout:?}: {what}\n{}",
                self.diagnostics()
            ),
        }
    }

    /// Router and pgcast state for a failure message.
    pub fn diagnostics(&self) -> String {
        let vty = |cmd: &str| {
            let out = Command::new("vtysh")
                .args(["-N", &self.router, "-c", cmd])
                .output();
            match out {
                Ok(o) => format!("{}{}", lossy(&o.stdout), lossy(&o.stderr)),
                Err(e) => format!("<vtysh: {e}>"),
            }
        };
        let route = Command::new("ip")
            .args(["-n", &self.router, "route", "show", ANYCAST])
            .output()
            .map(|o| lossy(&o.stdout))
            .unwrap_or_default();
        let mut s = format!(
            "==== netlab {} (state {}) ====\n---- router: show ip ospf neighbor\n{}\
             ---- router: kernel route {ANYCAST}\n{route}\
             ---- router: show ip ospf database router\n{}",
            self.prefix,
            self.state.display(),
            vty("show ip ospf neighbor"),
            vty("show ip ospf database router"),
        );
        let ospfd_log = self.state.join(format!("{}-ospfd.log", self.router));
        s.push_str(&format!(
            "---- router ospfd log (tail)\n{}\n",
            file_tail(&ospfd_log, 6000)
        ));
        for b in &self.balancers {
            let running = self.running_ref(b.index);
            s.push_str(&format!(
                "---- b{} ({}) pgcast running: {running}\n",
                b.index, b.ns
            ));
            if running {
                let st = self
                    .status(b.index)
                    .map(|v| v["routing"].to_string())
                    .unwrap_or_else(|| "<no status>".into());
                s.push_str(&format!("status.routing: {st}\n"));
            }
            s.push_str(&format!("log (tail):\n{}\n", file_tail(&b.log, 4000)));
        }
        s
    }
}

/// `routing.ospf.interfaces[].neighbors[]` of a `pgcast status --json`: (router_id, state).
pub fn status_neighbors(status: &Value) -> Vec<(String, String)> {
    let mut list = Vec::new();
    for ifc in status["routing"]["ospf"]["interfaces"]
        .as_array()
        .into_iter()
        .flatten()
    {
        for n in ifc["neighbors"].as_array().into_iter().flatten() {
            list.push((
                n["router_id"].as_str().unwrap_or("").to_string(),
                n["state"].as_str().unwrap_or("").to_string(),
            ));
        }
    }
    list
}

/// Whether pgcast reports a Full adjacency with `router_id`.
pub fn status_full_with(status: &Value, router_id: &str) -> bool {
    status_neighbors(status)
        .iter()
        .any(|(rid, st)| rid == router_id && st.to_ascii_lowercase().starts_with("full"))
}

/// `routing.prefixes[]` entry for `prefix` ("a.b.c.d/len"): (announced, reason).
/// Accepts the contract's `{prefix: "a.b.c.d/len", announced}` and the
/// `{prefix: "a.b.c.d", prefix_len, announce}` shape pgcast printed during development.
pub fn status_prefix(status: &Value, prefix: &str) -> Option<(bool, String)> {
    status["routing"]["prefixes"]
        .as_array()?
        .iter()
        .find(|p| {
            let name = match (p["prefix"].as_str(), p["prefix_len"].as_u64()) {
                (Some(a), Some(len)) if !a.contains('/') => format!("{a}/{len}"),
                (Some(a), _) => a.to_string(),
                _ => String::new(),
            };
            name == prefix
        })
        .map(|p| {
            let announced = p["announced"].as_bool().or(p["announce"].as_bool());
            (
                announced.unwrap_or(false),
                match &p["reason"] {
                    Value::String(s) => s.clone(),
                    Value::Null => String::new(),
                    v => v.to_string(),
                },
            )
        })
}

/// `routing.ospf.dropped` as reason → count.
pub fn status_dropped(status: &Value) -> BTreeMap<String, u64> {
    status["routing"]["ospf"]["dropped"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default()
}
