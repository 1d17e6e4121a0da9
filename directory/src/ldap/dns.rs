//! Domain controllers found in DNS: `_ldap._tcp.dc._msdcs.<domain>` names
//! every DC of an AD domain (the records each DC registers), with a
//! priority and a weight. The host names are resolved by the same name
//! server, which in an AD domain is the domain's own DNS: the agent's host
//! need not be set up to resolve them, and a test can point it at a DC.
//!
//! One UDP question at a time, with simple-dns encoding and parsing the
//! messages; a truncated answer (more DCs than fit in 512 bytes...) is
//! read as far as it goes.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use simple_dns::rdata::RData;
use simple_dns::{CLASS, Name, Packet, QCLASS, QTYPE, Question, TYPE};

/// How long a name server has to answer one question.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(3);

/// Where to look DCs up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvLookup {
    /// The domain's DNS name, e.g. `contoso.example`.
    pub domain: String,
    /// The name server to ask; the first of /etc/resolv.conf when absent.
    pub nameserver: Option<SocketAddr>,
}

impl SrvLookup {
    pub fn record(&self) -> String {
        format!("_ldap._tcp.dc._msdcs.{}", self.domain.trim_end_matches('.'))
    }
}

/// One SRV target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvTarget {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    pub target: String,
}

/// A DC found in DNS: its URL (by host name, which its certificate names)
/// and the addresses to connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub url: String,
    pub addrs: Vec<SocketAddr>,
}

/// The domain's DCs, in the order to try them (RFC 2782).
pub async fn discover(lookup: &SrvLookup) -> Result<Vec<Found>, String> {
    let ns = match lookup.nameserver {
        Some(ns) => ns,
        None => system_nameserver()?,
    };
    let record = lookup.record();
    let reply = ask(ns, &record, TYPE::SRV).await?;
    let answer =
        Packet::parse(&reply).map_err(|e| format!("{ns}: a bad answer for {record}: {e}"))?;
    let mut targets = Vec::new();
    for rr in &answer.answers {
        if let RData::SRV(srv) = &rr.rdata {
            targets.push(SrvTarget {
                priority: srv.priority,
                weight: srv.weight,
                port: srv.port,
                target: srv.target.to_string(),
            });
        }
    }
    if targets.is_empty() {
        return Err(format!("{ns} knows no {record} (SRV)"));
    }
    // AD's DNS puts the DCs' addresses in the answer's additional records.
    let mut known = addresses(&answer.additional_records);
    let mut found = Vec::new();
    for t in srv_order(targets, &mut fastrand::Rng::new()) {
        let host = t.target.trim_end_matches('.').to_ascii_lowercase();
        let ips = match known.remove(&host) {
            Some(ips) => ips,
            None => resolve(ns, &host).await.unwrap_or_default(),
        };
        let port = ldaps_port(t.port);
        found.push(Found {
            url: format!("ldaps://{host}:{port}"),
            addrs: ips
                .into_iter()
                .map(|ip| SocketAddr::new(ip, port))
                .collect(),
        });
    }
    Ok(found)
}

/// The SRV record names the LDAP port (389); AD serves LDAPS on 636 of the
/// same host, which is what is asked.
fn ldaps_port(port: u16) -> u16 {
    if port == 389 { 636 } else { port }
}

async fn resolve(ns: SocketAddr, host: &str) -> Result<Vec<IpAddr>, String> {
    let mut ips = Vec::new();
    for kind in [TYPE::A, TYPE::AAAA] {
        let reply = ask(ns, host, kind).await?;
        let answer =
            Packet::parse(&reply).map_err(|e| format!("{ns}: a bad answer for {host}: {e}"))?;
        ips.extend(addresses(&answer.answers).into_values().flatten());
    }
    Ok(ips)
}

fn addresses(records: &[simple_dns::ResourceRecord<'_>]) -> HashMap<String, Vec<IpAddr>> {
    let mut out: HashMap<String, Vec<IpAddr>> = HashMap::new();
    for rr in records {
        let ip = match &rr.rdata {
            RData::A(a) => IpAddr::V4(Ipv4Addr::from(a.address)),
            RData::AAAA(a) => IpAddr::V6(Ipv6Addr::from(a.address)),
            _ => continue,
        };
        let name = rr
            .name
            .to_string()
            .trim_end_matches('.')
            .to_ascii_lowercase();
        out.entry(name).or_default().push(ip);
    }
    out
}

/// One question to `ns` over UDP; the raw answer.
async fn ask(ns: SocketAddr, name: &str, kind: TYPE) -> Result<Vec<u8>, String> {
    let id = fastrand::u16(..);
    let mut query = Packet::new_query(id);
    query.set_flags(simple_dns::PacketFlag::RECURSION_DESIRED);
    let qname = Name::new(name).map_err(|e| format!("{name}: not a DNS name: {e}"))?;
    query.questions.push(Question::new(
        qname,
        QTYPE::TYPE(kind),
        QCLASS::CLASS(CLASS::IN),
        false,
    ));
    let bytes = query
        .build_bytes_vec()
        .map_err(|e| format!("{name}: cannot encode the question: {e}"))?;
    let local: SocketAddr = if ns.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = tokio::net::UdpSocket::bind(local)
        .await
        .map_err(|e| format!("cannot open a UDP socket: {e}"))?;
    socket.connect(ns).await.map_err(|e| format!("{ns}: {e}"))?;
    socket
        .send(&bytes)
        .await
        .map_err(|e| format!("{ns}: cannot ask for {name}: {e}"))?;
    let mut buf = vec![0; 4096];
    loop {
        let n = tokio::time::timeout(ANSWER_TIMEOUT, socket.recv(&mut buf))
            .await
            .map_err(|_| format!("{ns}: no answer for {name} within {ANSWER_TIMEOUT:?}"))?
            .map_err(|e| format!("{ns}: {e}"))?;
        // Answers to another question (a late one, or forged) are ignored.
        if n >= 2 && u16::from_be_bytes([buf[0], buf[1]]) == id {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

/// The first name server of /etc/resolv.conf.
fn system_nameserver() -> Result<SocketAddr, String> {
    let text = std::fs::read_to_string("/etc/resolv.conf")
        .map_err(|e| format!("no dns_server set and /etc/resolv.conf cannot be read: {e}"))?;
    first_nameserver(&text)
        .ok_or_else(|| "no dns_server set and /etc/resolv.conf names no nameserver".into())
}

fn first_nameserver(resolv_conf: &str) -> Option<SocketAddr> {
    resolv_conf.lines().find_map(|l| {
        let mut words = l.split_whitespace();
        (words.next() == Some("nameserver"))
            .then(|| words.next()?.parse::<IpAddr>().ok())
            .flatten()
            .map(|ip| SocketAddr::new(ip, 53))
    })
}

/// SRV targets in the order RFC 2782 says to try them: by priority, and
/// within one priority drawn at random in proportion to their weights.
pub fn srv_order(mut targets: Vec<SrvTarget>, rng: &mut fastrand::Rng) -> Vec<SrvTarget> {
    targets.sort_by_key(|t| t.priority);
    let mut out = Vec::with_capacity(targets.len());
    while !targets.is_empty() {
        let priority = targets[0].priority;
        let same = targets
            .iter()
            .take_while(|t| t.priority == priority)
            .count();
        let mut group: Vec<SrvTarget> = targets.drain(..same).collect();
        // Zero weights first, so that they are drawn only rarely (RFC 2782).
        group.sort_by_key(|t| t.weight);
        while !group.is_empty() {
            let total: u32 = group.iter().map(|t| u32::from(t.weight)).sum();
            let pick = rng.u32(0..=total);
            let mut running = 0;
            let i = group
                .iter()
                .position(|t| {
                    running += u32::from(t.weight);
                    running >= pick
                })
                .unwrap_or(0);
            out.push(group.remove(i));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(priority: u16, weight: u16, target: &str) -> SrvTarget {
        SrvTarget {
            priority,
            weight,
            port: 389,
            target: target.into(),
        }
    }

    #[test]
    fn srv_targets_go_by_priority_then_weight() {
        let targets = vec![
            t(10, 0, "backup.example."),
            t(0, 100, "heavy.example."),
            t(0, 0, "idle.example."),
            t(0, 1, "light.example."),
        ];
        let mut heavy_first = 0;
        for seed in 0..200 {
            let order = srv_order(targets.clone(), &mut fastrand::Rng::with_seed(seed));
            assert_eq!(order.len(), 4);
            // A lower priority is tried only after every higher one.
            assert_eq!(order[3].target, "backup.example.");
            if order[0].target == "heavy.example." {
                heavy_first += 1;
            }
        }
        // Weight 100 of 101 comes first almost always, not always.
        assert!((180..200).contains(&heavy_first), "{heavy_first}");
    }

    #[test]
    fn the_system_nameserver_is_the_first_listed() {
        let conf = "# generated\nsearch corp.example\nnameserver 10.0.0.53\nnameserver 10.0.0.54\n";
        assert_eq!(
            first_nameserver(conf),
            Some("10.0.0.53:53".parse().unwrap())
        );
        assert_eq!(first_nameserver("search x\n"), None);
        assert_eq!(ldaps_port(389), 636);
        assert_eq!(
            SrvLookup {
                domain: "contoso.example.".into(),
                nameserver: None
            }
            .record(),
            "_ldap._tcp.dc._msdcs.contoso.example"
        );
    }

    #[test]
    fn addresses_come_from_a_and_aaaa_records_by_lowercase_name() {
        let mut reply = Packet::new_reply(1);
        reply
            .additional_records
            .push(simple_dns::ResourceRecord::new(
                Name::new_unchecked("DC1.Test.Example."),
                CLASS::IN,
                900,
                RData::A(simple_dns::rdata::A {
                    address: u32::from(Ipv4Addr::new(127, 0, 0, 1)),
                }),
            ));
        let bytes = reply.build_bytes_vec().unwrap();
        let parsed = Packet::parse(&bytes).unwrap();
        assert_eq!(
            addresses(&parsed.additional_records),
            HashMap::from([(
                "dc1.test.example".to_owned(),
                vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]
            )])
        );
    }
}
