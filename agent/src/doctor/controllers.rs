//! doctor's view of an `ldap` forest's domain controllers: every one
//! configured, asked in turn, with the one that answers and why the others
//! did not — so a dead or misconfigured DC is found before failover hides
//! it.

use super::{Check, check};
use crate::config::{ForestConfig, ForestKind};
use crate::forests::open_ldap;
use directory::ldap::ControllerProbe;

/// The check of `forest`'s DCs; `None` for a forest that has none (embedded).
pub async fn controllers_check(forest: &ForestConfig) -> Option<Check> {
    if forest.kind != ForestKind::Ldap {
        return None;
    }
    let title = format!("forest {}: domain controllers", forest.name);
    let directory = match open_ldap(forest) {
        Ok(d) => d,
        Err(e) => return Some(check(title, false, e.to_string())),
    };
    let probes = directory.probe_controllers().await;
    Some(summarise(title, &probes))
}

/// At least one DC must answer for the forest to work; one that does not is
/// reported (and fails the check) so it is fixed or removed from `urls`
/// while the others still carry the load.
fn summarise(title: String, probes: &[ControllerProbe]) -> Check {
    let answering = probes.iter().filter(|p| p.answer.is_ok()).count();
    let lines: Vec<String> = probes
        .iter()
        .map(|p| match &p.answer {
            Ok(host) if host.is_empty() => format!("{} answers", p.url),
            Ok(host) => format!("{} answers ({host})", p.url),
            Err(why) => format!("{} does not answer: {why}", p.url),
        })
        .collect();
    let mut c = check(
        title,
        answering == probes.len(),
        format!(
            "{answering} of {} answer: {}",
            probes.len(),
            lines.join("; ")
        ),
    );
    if answering < probes.len() {
        c.fix.push(
            "start or repair the domain controllers that do not answer, or remove them from the forest's urls"
                .into(),
        );
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_dc_is_listed_with_the_one_that_answers() {
        let probes = [
            ControllerProbe {
                url: "ldaps://127.0.0.1:1".into(),
                answer: Err("cannot connect: connection refused".into()),
            },
            ControllerProbe {
                url: "ldaps://dc1.test.example:636".into(),
                answer: Ok("dc1.test.example".into()),
            },
        ];
        let c = summarise("forest f: domain controllers".into(), &probes);
        assert!(!c.ok);
        assert_eq!(
            c.detail,
            "1 of 2 answer: ldaps://127.0.0.1:1 does not answer: cannot connect: connection refused; \
             ldaps://dc1.test.example:636 answers (dc1.test.example)"
        );
        assert_eq!(c.fix.len(), 1);
        assert!(summarise("t".into(), &probes[1..]).ok);
    }
}
