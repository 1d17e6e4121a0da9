//! The Kerberos environment of an agent whose forests bind with a keytab.
//!
//! MIT Kerberos reads where the keytab, the ticket cache and krb5.conf are
//! from the process environment. Setting it from inside is `unsafe` (and
//! racy once threads run), which this workspace forbids, so the binary
//! re-executes itself once with it set, before it does anything else:
//! `KRB5_CLIENT_KTNAME` (the library gets initial tickets from it by
//! itself, and again when they expire), `KRB5CCNAME=MEMORY:` (tickets stay
//! in this process, never on disk, nor shared with other programs) and
//! `KRB5_CONFIG` when `krb5_conf` is set.

use std::ffi::OsString;

use crate::config::AgentConfig;

/// The variables the agent's forests need, with their values.
pub fn environment(config: &AgentConfig) -> Vec<(&'static str, OsString)> {
    let Some(forest) = config.forests.iter().find(|f| f.keytab_file.is_some()) else {
        return Vec::new();
    };
    let mut vars = Vec::new();
    if let Some(keytab) = &forest.keytab_file {
        let mut value = OsString::from("FILE:");
        value.push(std::path::absolute(keytab).unwrap_or_else(|_| keytab.clone()));
        vars.push(("KRB5_CLIENT_KTNAME", value));
    }
    vars.push(("KRB5CCNAME", OsString::from("MEMORY:writeback-agent")));
    if let Some(conf) = &forest.krb5_conf {
        vars.push((
            "KRB5_CONFIG",
            std::path::absolute(conf)
                .unwrap_or_else(|_| conf.clone())
                .into(),
        ));
    }
    vars
}

/// Whether the process already runs with `vars`.
pub fn in_place(vars: &[(&'static str, OsString)]) -> bool {
    vars.iter()
        .all(|(k, v)| std::env::var_os(k).as_ref() == Some(v))
}

/// Re-executes this program with the Kerberos environment when it is not
/// in place; returns only when it is (or on failure to re-execute).
#[cfg(unix)]
pub fn adopt(config: &AgentConfig) -> std::io::Result<()> {
    use std::os::unix::process::CommandExt;
    let vars = environment(config);
    if in_place(&vars) {
        return Ok(());
    }
    let exe = std::env::current_exe()?;
    let err = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .envs(vars)
        .exec();
    Err(err)
}

/// Elsewhere the environment is the service's to set (see README).
#[cfg(not(unix))]
pub fn adopt(_config: &AgentConfig) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_keytab_forest_gets_a_private_ticket_cache_and_its_krb5_conf() {
        let base = "broker = \"https://b:443\"\ntenant = \"a\"\nlisten_key_file = \"k\"\n";
        let plain = AgentConfig::from_toml(base).unwrap();
        assert!(environment(&plain).is_empty());
        assert!(in_place(&environment(&plain)));
        let forest = "[[forests]]\nname = \"f\"\nkind = \"ldap\"\nurl = \"ldaps://dc1:636\"\n\
                      ca_file = \"ca\"\nbind_dn = \"cn=svc\"\nkeytab_file = \"/etc/wb/svc.keytab\"\n\
                      principal = \"svc@TEST.EXAMPLE\"\nkrb5_conf = \"/etc/wb/krb5.conf\"\n";
        let parsed = AgentConfig::from_toml(&format!("{base}{forest}"));
        if !directory::ldap::KERBEROS_BUILT {
            let err = parsed.unwrap_err().to_string();
            assert!(err.contains("Kerberos support"), "{err}");
            return;
        }
        let config = parsed.unwrap();
        let vars = environment(&config);
        assert_eq!(
            vars,
            [
                ("KRB5_CLIENT_KTNAME", "FILE:/etc/wb/svc.keytab".into()),
                ("KRB5CCNAME", "MEMORY:writeback-agent".into()),
                ("KRB5_CONFIG", "/etc/wb/krb5.conf".into()),
            ]
        );
        assert!(!in_place(&vars));
    }
}
