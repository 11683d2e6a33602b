//! SSRF protection: which IP addresses a delivery may connect to.
//!
//! Names are resolved once, by [`GuardedResolver`], which hands the HTTP client only the
//! addresses that pass the policy: the connection goes to an address that was checked, so
//! a DNS answer that changes between check and connect (DNS rebinding) cannot slip through.
//!
//! Through a proxy the HTTP client resolves only the proxy's name (the operator's choice,
//! exempt from the policy) and the proxy resolves the receiver's: [`check_via_proxy`] then
//! refuses a receiver whose name resolves here to a refused address, and the proxy's own
//! rules (e.g. Smokescreen's) must do the rest.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::sync::{Arc, LazyLock};

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

#[derive(Debug, Clone, Default)]
pub struct AddressPolicy {
    allow: Vec<IpNet>,
}

impl AddressPolicy {
    pub fn new(allow: Vec<IpNet>) -> Self {
        AddressPolicy { allow }
    }

    /// Public addresses pass; others only if an allow-listed network contains them.
    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        is_public(ip) || self.allow.iter().any(|net| net.contains(&ip))
    }
}

/// IPv4 addresses hidden inside IPv6 forms (mapped `::ffff:a.b.c.d`, SIIT's translated
/// `::ffff:0:a.b.c.d`, NAT64 `64:ff9b::/96`) are judged as the IPv4 address they reach.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return IpAddr::V4(v4);
            }
            let s = v6.segments();
            let nat64 = s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0];
            let translated = s[0..4] == [0, 0, 0, 0] && s[4] == 0xffff && s[5] == 0;
            if nat64 || translated {
                let o = v6.octets();
                return IpAddr::V4(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
            }
            IpAddr::V6(v6)
        }
        v4 => v4,
    }
}

fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local() // includes 169.254.169.254, the cloud metadata address
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_multicast()
        || o[0] == 0 // "this network"
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // 100.64.0.0/10 carrier-grade NAT
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // 192.0.0.0/24 protocol assignments
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // 198.18.0.0/15 benchmarking
        || o[0] >= 240) // reserved
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] == 0x2002) // 6to4 can tunnel to any IPv4, private ones included
        || (s[0] == 0x2001 && s[1] == 0) // Teredo, likewise
        || (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1) // local-use NAT64 (RFC 8215): a local translator's
        || (s[0] == 0 && s[1] == 0 && s[2] == 0 && s[3] == 0 && s[4] == 0 && s[5] == 0))
    // IPv4-compatible
}

/// A DNS resolver for the HTTP client that drops every address the policy refuses and
/// fails when none is left.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    policy: Arc<AddressPolicy>,
    /// The configured proxy's host name, resolved without the policy.
    proxy_host: Option<String>,
}

impl GuardedResolver {
    pub fn new(policy: Arc<AddressPolicy>, proxy_host: Option<String>) -> Self {
        GuardedResolver { policy, proxy_host }
    }
}

const REFUSED_HEAD: &str = "destination";
const REFUSED_TAIL: &str = "is refused: it does not resolve here, or resolves to addresses that are not allowed \
                            (private, loopback or reserved; see delivery.allow_networks, and with a proxy \
                            delivery.proxy_resolves_names)";

/// Why a delivery may not be handed to the proxy.
#[derive(Debug, thiserror::Error)]
pub enum ProxyRefusal {
    #[error(transparent)]
    Blocked(#[from] Blocked),
    /// (Told as [`Blocked`] is, for the same reason.)
    #[error("{REFUSED_HEAD} {0} {REFUSED_TAIL}")]
    Unresolved(String),
}

/// Whether a delivery to `host` (a name, not an address) may be handed to the proxy, which
/// resolves it again: a name that resolves here to any refused address is refused (the
/// proxy might pick that one), as is `localhost` and its subdomains whatever they resolve
/// to (a proxy's own loopback); a name that does not resolve here within `within` is refused
/// too, unless `resolves_names` leaves it to the proxy (split DNS).
pub async fn check_via_proxy(
    policy: &AddressPolicy,
    host: &str,
    resolves_names: bool,
    within: std::time::Duration,
) -> Result<(), ProxyRefusal> {
    let name = host.trim_end_matches('.').to_ascii_lowercase();
    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    if (name == "localhost" || name.ends_with(".localhost")) && !policy.permits(loopback) {
        return Err(Blocked { host: host.to_string() }.into());
    }
    let looked_up = tokio::time::timeout(within, lookup_host(name)).await;
    match looked_up {
        Ok(Ok(found)) => {
            for addr in found {
                if !policy.permits(addr.ip()) {
                    return Err(Blocked { host: host.to_string() }.into());
                }
            }
            Ok(())
        }
        _ if resolves_names => Ok(()),
        _ => Err(ProxyRefusal::Unresolved(host.to_string())),
    }
}

/// A destination refused. The text is the same whether its name does not resolve or
/// resolves to refused addresses: it is recorded in the attempt log, which tenants read,
/// and telling the two apart would let a tenant find which internal names exist
/// (`redis.default.svc.cluster.local`) through this server's resolver.
#[derive(Debug, thiserror::Error)]
#[error("{REFUSED_HEAD} {host} {REFUSED_TAIL}")]
pub struct Blocked {
    pub host: String,
}

/// Name lookups running at once on this node. The system's resolver blocks a thread of
/// tokio's blocking pool for each, which a timeout does not free: a nameserver that never
/// answers (a tenant's endpoints under such a domain) holds each thread for the resolver's
/// own timeouts, tens of seconds. Unbounded, they filled the pool that SQLite's reads run on
/// too, stalling claims and the API for every tenant; bounded, only deliveries to names
/// wait for a lookup (within their attempt's time).
const LOOKUPS_AT_ONCE: usize = 64;
static LOOKUPS: LazyLock<Arc<tokio::sync::Semaphore>> =
    LazyLock::new(|| Arc::new(tokio::sync::Semaphore::new(LOOKUPS_AT_ONCE)));
/// Lookups of one name at once: an endpoint's many deliveries to a name whose nameserver
/// never answers hold two of the node's [`LOOKUPS_AT_ONCE`], not all of them, and the
/// lookups of other names go on.
const LOOKUPS_PER_NAME: usize = 2;
/// Each name's lookups, while some run or wait.
type Names = std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Semaphore>>>;
static NAMES: LazyLock<Names> = LazyLock::new(Default::default);

/// The addresses of `host`, looked up by the system's resolver, at most
/// [`LOOKUPS_PER_NAME`] at a time for one name and [`LOOKUPS_AT_ONCE`] in all.
async fn lookup_host(host: String) -> std::io::Result<Vec<SocketAddr>> {
    bounded_lookup(&NAMES, &LOOKUPS, host, |host| (host, 0).to_socket_addrs().map(Iterator::collect)).await
}

/// Runs `resolve` for `host` on the blocking pool once its name has one of its
/// [`LOOKUPS_PER_NAME`] places in `names` and one of `all` is free, both held by the
/// thread until `resolve` returns.
async fn bounded_lookup<T: Send + 'static>(
    names: &Names,
    all: &Arc<tokio::sync::Semaphore>,
    host: String,
    resolve: impl FnOnce(&str) -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    let name = {
        let mut names = names.lock().unwrap_or_else(|p| p.into_inner());
        // Those no lookup holds any more (the map's is their only reference) go.
        names.retain(|_, s| Arc::strong_count(s) > 1);
        names.entry(host.clone()).or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(LOOKUPS_PER_NAME))).clone()
    };
    let for_name = name.acquire_owned().await.map_err(std::io::Error::other)?;
    on_blocking_pool(all, move || {
        let _for_name = for_name;
        resolve(&host)
    })
    .await
}

/// Runs `work` on tokio's blocking pool once one of `permits` is free, the permit held
/// by the thread until `work` ends (not by this future, which a timeout may drop while
/// the thread is still blocked).
async fn on_blocking_pool<T: Send + 'static>(
    permits: &Arc<tokio::sync::Semaphore>,
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    let permit = permits.clone().acquire_owned().await.map_err(std::io::Error::other)?;
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        work()
    })
    .await
    .map_err(std::io::Error::other)?
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        let exempt = self.proxy_host.as_deref().is_some_and(|p| p.eq_ignore_ascii_case(name.as_str()));
        Box::pin(async move {
            let host = name.as_str().to_string();
            let found: Vec<SocketAddr> = match lookup_host(host.clone()).await {
                Ok(found) => found,
                Err(e) => {
                    // The cause for the operator's log only (see `Blocked`).
                    tracing::debug!(%host, error = %e, "destination does not resolve");
                    return Err(Box::new(Blocked { host }) as Box<dyn std::error::Error + Send + Sync>);
                }
            };
            if exempt {
                return Ok(Box::new(found.into_iter()) as Addrs);
            }
            let allowed: Vec<SocketAddr> = found.into_iter().filter(|a| policy.permits(a.ip())).collect();
            if allowed.is_empty() {
                return Err(Box::new(Blocked { host }) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lookups that hang (a nameserver that never answers) and whose callers gave up hold
    /// no more than their bound of the blocking pool's threads: other blocking work (SQLite's
    /// reads) still runs at once. Here a pool of 3 threads, lookups bounded to 2, and 6 hung.
    #[test]
    fn hung_lookups_leave_the_blocking_pool_to_other_work() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(3)
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let permits = Arc::new(tokio::sync::Semaphore::new(2));
            for _ in 0..6 {
                let hung = on_blocking_pool(&permits, || {
                    std::thread::sleep(std::time::Duration::from_secs(5));
                    Ok(())
                });
                // Its caller gives up, as a delivery's attempt times out.
                let _ = tokio::time::timeout(std::time::Duration::from_millis(50), hung).await;
            }
            let other = tokio::task::spawn_blocking(|| "read");
            let done = tokio::time::timeout(std::time::Duration::from_secs(3), other).await;
            assert!(matches!(done, Ok(Ok("read"))), "other blocking work waited behind hung lookups");
        });
        runtime.shutdown_background();
    }

    /// Lookups of one name that hang (an endpoint's many deliveries, its nameserver silent)
    /// hold two of the node's places, not all: another name is looked up at once.
    #[test]
    fn one_name_hanging_leaves_the_lookups_of_others() {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
        runtime.block_on(async {
            let (names, all) = (Names::default(), Arc::new(tokio::sync::Semaphore::new(4)));
            for _ in 0..6 {
                let hung = bounded_lookup(&names, &all, "silent.example".into(), |_| {
                    std::thread::sleep(std::time::Duration::from_secs(5));
                    Ok("late")
                });
                let _ = tokio::time::timeout(std::time::Duration::from_millis(50), hung).await;
            }
            let other = bounded_lookup(&names, &all, "answers.example".into(), |_| Ok("found"));
            let done = tokio::time::timeout(std::time::Duration::from_secs(3), other).await;
            assert_eq!(done.ok().and_then(Result::ok), Some("found"), "another name waited behind the silent one");
        });
        runtime.shutdown_background();
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn refuses_non_public_addresses() {
        let p = AddressPolicy::default();
        for bad in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "::",
            "fc00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::a9fe:a9fe",
            "::ffff:0:a9fe:a9fe",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "2002:7f00:1::",
            "224.0.0.1",
            "255.255.255.255",
        ] {
            assert!(!p.permits(ip(bad)), "{bad} should be refused");
        }
        for good in ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8", "::ffff:0:808:808"] {
            assert!(p.permits(ip(good)), "{good} should be allowed");
        }
    }

    #[test]
    fn allow_list_opens_a_network() {
        let p = AddressPolicy::new(vec!["127.0.0.0/8".parse().unwrap()]);
        assert!(p.permits(ip("127.0.0.1")));
        assert!(p.permits(ip("::ffff:127.0.0.1")));
        assert!(!p.permits(ip("10.0.0.1")));
        assert!(!p.permits(ip("::1")));
    }

    #[tokio::test]
    async fn resolver_drops_refused_addresses() {
        let refuse = GuardedResolver::new(Arc::new(AddressPolicy::default()), None);
        let err = refuse.resolve("localhost".parse().unwrap()).await.err().expect("localhost must be refused");
        assert!(err.to_string().contains("not allowed"), "{err}");
        let allow = GuardedResolver::new(Arc::new(AddressPolicy::new(vec!["127.0.0.0/8".parse().unwrap()])), None);
        let addrs: Vec<SocketAddr> = allow.resolve("localhost".parse().unwrap()).await.unwrap().collect();
        assert!(addrs.iter().all(|a| a.ip() == ip("127.0.0.1")), "{addrs:?}");
        assert!(!addrs.is_empty());
        // The proxy's own name is the operator's choice: resolved whatever the policy.
        let proxied = GuardedResolver::new(Arc::new(AddressPolicy::default()), Some("LocalHost".into()));
        assert!(proxied.resolve("localhost".parse().unwrap()).await.is_ok());
    }

    #[tokio::test]
    async fn names_handed_to_a_proxy_are_checked_here_first() {
        let within = std::time::Duration::from_secs(5);
        let refuse = AddressPolicy::default();
        let loopback = AddressPolicy::new(vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()]);
        for name in ["localhost", "localhost.", "LocalHost", "api.localhost"] {
            let refused = check_via_proxy(&refuse, name, true, within).await;
            assert!(matches!(refused, Err(ProxyRefusal::Blocked(_))), "{name}: {refused:?}");
        }
        assert!(check_via_proxy(&loopback, "localhost", false, within).await.is_ok());
        // A name only the proxy can resolve: refused, unless left to the proxy.
        let unknown = check_via_proxy(&refuse, "receiver.invalid", false, within).await;
        assert!(matches!(unknown, Err(ProxyRefusal::Unresolved(_))), "{unknown:?}");
        assert!(check_via_proxy(&refuse, "receiver.invalid", true, within).await.is_ok());
    }
}
