//! Network partitions for the cluster tests (issue 19): one Linux network
//! namespace per process (each NATS server, each broker node), all on one
//! bridge in a namespace of its own, plus one veth from the test process's
//! own namespace ("host") onto the bridge, so that in-process portals and
//! agents reach every member.
//!
//! ```ignore
//! let lab = NetLab::new(&["n0", "n1", "n2", "a", "b", "c"]);
//! let ip = lab.ip("a"); // 10.x.y.z, inside namespace lab.namespace("a")
//! lab.split(&[&["n0", "n1", "a", "b"], &["n2", "c"]]);
//! lab.isolate("c", &["n0", "n1", "n2"]); // c keeps the host (its agent)
//! lab.heal();
//! ```
//!
//! A cut drops packets silently, in both directions: each side gets a
//! permanent neighbour entry for the other's address with a MAC address
//! nobody has, so its frames are flooded by the bridge and discarded by
//! every receiver. Nothing answers: no RST, no ICMP, no local error (a
//! blackhole route would fail `connect` at once with EINVAL; the kernels
//! CI runs on lack the tc qdiscs a filter would need). Healing deletes the
//! entries; ARP finds the real peer again. Processes are never touched.
//!
//! Names are unique per lab, so labs of tests running in parallel never
//! meet: each takes a /24 of 10.64.0.0/10 at random among those no address
//! of the host uses, reserved by a lock file in the temp dir that holds the
//! owner's pid, and its id (in every name) is that /24 in hex: namespaces
//! `rn<id>-<member>` and `rn<id>-br`, the host's veth `rn<id>h`. Dropping the lab deletes its namespaces
//! (their processes, killed by their owners, go with them) and its veth,
//! also when the test panics; a new lab first sweeps what labs of dead test
//! processes (SIGKILLed: no Drop) left behind.
//!
//! Needs root (`ip netns add`); a lab that cannot create namespaces panics
//! saying so: the partition tests must not pass by skipping.

use std::collections::BTreeSet;
use std::hash::{BuildHasher, Hasher};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

/// The name of the test process's own namespace as a member.
pub const HOST: &str = "host";

/// A MAC address no interface has: frames to it go nowhere.
const NOWHERE: &str = "02:00:5e:10:de:ad";

/// Members of one lab (the bridge's ports): a /24 leaves room for far more.
const MAX_MEMBERS: usize = 200;

/// A bridge, a namespace per member and the cuts between them.
pub struct NetLab {
    id: String,
    /// The first three octets of the lab's /24.
    net: [u8; 3],
    members: Vec<String>,
    /// Pairs of member indices (smaller first; the host is `members.len()`)
    /// that cannot reach each other.
    cuts: Mutex<BTreeSet<(usize, usize)>>,
    lock: PathBuf,
}

impl NetLab {
    /// A bridge and one namespace per member, addressed and up, plus the
    /// host's veth. Member names are short words (they name namespaces);
    /// [`HOST`] is reserved.
    pub fn new(members: &[&str]) -> NetLab {
        assert!(members.len() <= MAX_MEMBERS, "too many members");
        assert!(!members.contains(&HOST), "{HOST:?} is the test's namespace");
        check_usable();
        sweep_stale();
        let (id, net, lock) = reserve();
        let lab = NetLab {
            id,
            net,
            members: members.iter().map(|m| (*m).to_owned()).collect(),
            cuts: Mutex::new(BTreeSet::new()),
            lock,
        };
        let br = lab.bridge_ns();
        ip(&["netns", "add", &br]);
        ip(&["-n", &br, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &br, "link", "set", "br0", "up"]);
        let host_veth = lab.host_veth();
        ip(&[
            "link", "add", &host_veth, "type", "veth", "peer", "name", "v-host", "netns", &br,
        ]);
        ip(&["-n", &br, "link", "set", "v-host", "master", "br0", "up"]);
        ip(&[
            "addr",
            "add",
            &format!("{}/24", lab.host_ip()),
            "dev",
            &host_veth,
        ]);
        ip(&["link", "set", &host_veth, "up"]);
        for member in &lab.members {
            let ns = lab.namespace(member);
            let port = format!("v-{member}");
            ip(&["netns", "add", &ns]);
            ip(&[
                "-n", &br, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                &ns,
            ]);
            ip(&["-n", &br, "link", "set", &port, "master", "br0", "up"]);
            let address = format!("{}/24", lab.ip(member));
            ip(&["-n", &ns, "addr", "add", &address, "dev", "eth0"]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
        }
        lab
    }

    /// The lab's unique id (part of every name it creates).
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn members(&self) -> &[String] {
        &self.members
    }

    /// The namespace `member` runs in (for `ip netns exec`).
    pub fn namespace(&self, member: &str) -> String {
        self.index(member);
        format!("rn{}-{member}", self.id)
    }

    /// `member`'s address, on its `eth0`.
    pub fn ip(&self, member: &str) -> Ipv4Addr {
        self.address(self.index(member))
    }

    /// The test process's address on the lab's bridge.
    pub fn host_ip(&self) -> Ipv4Addr {
        let [a, b, c] = self.net;
        Ipv4Addr::new(a, b, c, 1)
    }

    /// Every address of the lab (the host's first), for certificates.
    pub fn all_ips(&self) -> Vec<Ipv4Addr> {
        std::iter::once(self.host_ip())
            .chain((0..self.members.len()).map(|i| self.address(i)))
            .collect()
    }

    /// A command that runs `program` inside `member`'s namespace (`ip
    /// netns exec` execs it: the child's pid is the program's).
    pub fn command(&self, member: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.namespace(member)])
            .arg(program);
        command
    }

    /// Cuts `a` from `b` (either may be [`HOST`]), both directions.
    pub fn cut(&self, a: &str, b: &str) {
        let pair = ordered(self.index(a), self.index(b));
        if self.cuts.lock().expect("cuts").insert(pair) {
            self.set_neighbour(pair.0, pair.1, true);
            self.set_neighbour(pair.1, pair.0, true);
        }
    }

    /// Cuts every member of each group from every member of the others;
    /// members in no group keep every link they have.
    pub fn split(&self, groups: &[&[&str]]) {
        for (g, group) in groups.iter().enumerate() {
            for other in &groups[g + 1..] {
                for a in group.iter() {
                    for b in other.iter() {
                        self.cut(a, b);
                    }
                }
            }
        }
    }

    /// Cuts `member` from each of `from`, and from nothing else.
    pub fn isolate(&self, member: &str, from: &[&str]) {
        for other in from {
            self.cut(member, other);
        }
    }

    /// Whether `a` and `b` are cut from each other.
    pub fn is_cut(&self, a: &str, b: &str) -> bool {
        let pair = ordered(self.index(a), self.index(b));
        self.cuts.lock().expect("cuts").contains(&pair)
    }

    /// Removes every cut: the real neighbours are learnt again by ARP.
    pub fn heal(&self) {
        let cuts = std::mem::take(&mut *self.cuts.lock().expect("cuts"));
        for (a, b) in cuts {
            self.set_neighbour(a, b, false);
            self.set_neighbour(b, a, false);
        }
    }

    fn index(&self, member: &str) -> usize {
        if member == HOST {
            return self.members.len();
        }
        self.members
            .iter()
            .position(|m| m == member)
            .unwrap_or_else(|| panic!("no member {member:?} in the lab ({:?})", self.members))
    }

    /// Address of member `i` (the host is `members.len()`): .10 onwards.
    fn address(&self, i: usize) -> Ipv4Addr {
        if i == self.members.len() {
            return self.host_ip();
        }
        let [a, b, c] = self.net;
        Ipv4Addr::new(a, b, c, 10 + i as u8)
    }

    /// On member `from`'s side, points `to`'s address nowhere (`cut`) or
    /// back to ARP.
    fn set_neighbour(&self, from: usize, to: usize, cut: bool) {
        let peer = self.address(to).to_string();
        let mut args: Vec<String> = Vec::new();
        let device = if from == self.members.len() {
            self.host_veth()
        } else {
            args.extend(["-n".into(), self.namespace(&self.members[from])]);
            "eth0".to_owned()
        };
        if cut {
            args.extend(
                [
                    "neigh",
                    "replace",
                    &peer,
                    "lladdr",
                    NOWHERE,
                    "nud",
                    "permanent",
                    "dev",
                ]
                .map(str::to_owned),
            );
            args.push(device);
            ip(&args.iter().map(String::as_str).collect::<Vec<_>>());
        } else {
            args.extend(["neigh", "del", &peer, "dev"].map(str::to_owned));
            args.push(device);
            // Gone already if the kernel dropped it: nothing to heal.
            let _ = try_ip(&args.iter().map(String::as_str).collect::<Vec<_>>());
        }
    }

    fn bridge_ns(&self) -> String {
        format!("rn{}-br", self.id)
    }

    fn host_veth(&self) -> String {
        format!("rn{}h", self.id)
    }
}

impl Drop for NetLab {
    fn drop(&mut self) {
        remove_lab(&self.id);
        let _ = std::fs::remove_file(&self.lock);
    }
}

fn ordered(a: usize, b: usize) -> (usize, usize) {
    assert_ne!(a, b, "a member cannot be cut from itself");
    (a.min(b), a.max(b))
}

/// Runs `ip` with `args`; panics with its stderr when it fails.
fn ip(args: &[&str]) {
    if let Err(e) = try_ip(args) {
        panic!("ip {}: {e}", args.join(" "));
    }
}

fn try_ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run ip (iproute2): {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// Panics with a clear message when namespaces cannot be made here.
fn check_usable() {
    // Unique: labs of one test process may start at once.
    let probe = format!("rnprobe{:08x}", random() as u32);
    if let Err(e) = try_ip(&["netns", "add", &probe]) {
        panic!(
            "the partition tests need Linux network namespaces: `ip netns add` failed ({e}); \
             run them as root (CI does) on a kernel with network namespaces"
        );
    }
    let _ = try_ip(&["netns", "del", &probe]);
}

/// Directory of the labs' lock files: `<id>` holding `<pid> <a>.<b>.<c>`.
fn lock_dir() -> PathBuf {
    let dir = std::env::temp_dir().join("relay-netns");
    std::fs::create_dir_all(&dir).expect("create the netns lock dir");
    dir
}

/// Random enough for names and subnets: the std hasher's random keys.
fn random() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish()
}

/// A fresh /24 the host does not use already and the lab's id derived
/// from it, reserved by a lock file created exclusively.
fn reserve() -> (String, [u8; 3], PathBuf) {
    let used = try_ip(&["-4", "-o", "addr", "show"]).unwrap_or_default();
    for _ in 0..100 {
        let r = random();
        // 10.64.0.0/10: a corner of 10/8 that local networks rarely use.
        let net = [10, 64 + (r & 63) as u8, ((r >> 8) & 0xff) as u8];
        // The id is the /24: one lock file makes both unique.
        let id = format!("{:02x}{:02x}", net[1], net[2]);
        let prefix = format!("{}.{}.{}", net[0], net[1], net[2]);
        if used.contains(&format!(" {prefix}.")) {
            continue;
        }
        // Written whole under a temporary name, then linked into place:
        // the link fails if the id is taken, and a sweep running beside us
        // never reads a half-written file (which would look like a dead
        // owner's).
        let lock = lock_dir().join(&id);
        let draft = lock_dir().join(format!(".{id}.{}", std::process::id()));
        std::fs::write(&draft, format!("{} {prefix}", std::process::id()))
            .expect("write the lab's lock file");
        let linked = std::fs::hard_link(&draft, &lock);
        let _ = std::fs::remove_file(&draft);
        if linked.is_ok() {
            return (id, net, lock);
        }
    }
    panic!("no free /24 in 10.64.0.0/10 for a network lab");
}

/// Deletes the labs whose owner process is gone (killed: no Drop ran).
fn sweep_stale() {
    let Ok(entries) = std::fs::read_dir(lock_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        // Drafts (dot files) are another lab's reservation in progress.
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let owner = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| t.split_whitespace().next()?.parse::<u32>().ok());
        let alive = owner.is_some_and(|pid| PathBuf::from(format!("/proc/{pid}")).exists());
        if !alive {
            let id = entry.file_name().to_string_lossy().into_owned();
            remove_lab(&id);
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// Deletes lab `id`'s namespaces and host veth (whatever exists of them).
fn remove_lab(id: &str) {
    let prefix = format!("rn{id}-");
    let names = try_ip(&["netns", "list"]).unwrap_or_default();
    for ns in names
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|ns| ns.starts_with(&prefix))
    {
        let _ = try_ip(&["netns", "del", ns]);
    }
    // Usually gone with its peer in the bridge namespace already.
    let _ = try_ip(&["link", "del", &format!("rn{id}h")]);
}
