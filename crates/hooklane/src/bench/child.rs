//! The server under test: `hooklane serve` from this very binary, as a child process with
//! its own temporary directory and generated configuration. It is killed, and the
//! directory removed, when the handle is dropped (including on error paths).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{bail, Context};
use rand::RngCore;

use super::BenchArgs;

const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
const READY_LINE: &str = "hooklane listening on ";

pub struct ChildServer {
    child: Option<Child>,
    dir: PathBuf,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    pub admin_token: String,
}

impl ChildServer {
    /// Starts the server on the embedded SQLite store in its temporary directory, or on
    /// `database_url` when given. Durability settings are the server's defaults.
    pub fn start(args: &BenchArgs) -> anyhow::Result<ChildServer> {
        Self::start_with_token(args, random_hex(24))
    }

    /// Like [`ChildServer::start`] with a given admin token (nodes of one cluster share it).
    pub fn start_with_token(args: &BenchArgs, admin_token: String) -> anyhow::Result<ChildServer> {
        let dir = std::env::temp_dir().join(format!("hooklane-bench-{}-{}", std::process::id(), random_hex(6)));
        create_private_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let mut server = ChildServer { child: None, dir, base: String::new(), admin_token };
        let config_path = write_config(&server.dir, args.database_url.as_deref(), &server.admin_token)?;
        let stderr_path = server.dir.join("server.log");
        let stderr = std::fs::File::create(&stderr_path)?;

        let exe = match &args.server_bin {
            Some(path) => path.clone(),
            None => std::env::current_exe().context("cannot find this executable")?,
        };
        let mut command = Command::new(exe);
        command.arg("serve").arg("--config").arg(&config_path);
        // The generated configuration alone decides: no HOOKLANE_* override from outside.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("HOOKLANE_") {
                command.env_remove(key);
            }
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .context("cannot start `hooklane serve`")?;
        let stdout = child.stdout.take().context("no stdout")?;
        server.child = Some(child);

        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            // Keep reading to the end so the child never blocks on a full pipe.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix(READY_LINE) {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(rest.trim().to_string());
                    }
                }
            }
        });
        match rx.recv_timeout(STARTUP_TIMEOUT) {
            Ok(base) => server.base = base,
            Err(_) => {
                let log = std::fs::read_to_string(&stderr_path).unwrap_or_default();
                bail!("hooklane serve did not start; its log:\n{log}");
            }
        }
        Ok(server)
    }

    /// The server's peak resident memory (VmHWM), in MiB, with its live workers' peaks
    /// (the transformation workers it starts) added.
    pub fn peak_rss_mib(&self) -> Option<f64> {
        let pid = self.child.as_ref()?.id();
        let own = peak_rss_mib_of(pid)?;
        Some(own + descendants(pid).into_iter().filter_map(peak_rss_mib_of).sum::<f64>())
    }

    /// CPU time (user + system) the server has used so far, in seconds, with its workers':
    /// those still running, and those it has ended and waited for.
    pub fn cpu_seconds(&self) -> Option<f64> {
        tree_cpu_seconds(self.child.as_ref()?.id())
    }

    /// What the server wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// Kills the server and removes its directory.
    pub fn stop(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Creates `dir` (not there yet: an existing one, which someone else may have made in the
/// shared temporary directory, is refused) readable by this user only: it holds the admin
/// token and the database URL (its password too), and the SQLite database.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Writes the server's configuration into `dir`, readable by this user only (it holds the
/// admin token, and the database URL with its password); returns its path.
fn write_config(dir: &Path, database_url: Option<&str>, admin_token: &str) -> anyhow::Result<PathBuf> {
    use std::io::Write;
    let db = match database_url {
        Some(url) => url.to_string(),
        None => format!("sqlite:{}", dir.join("hooklane.db").display()),
    };
    let config = format!(
        "listen = \"127.0.0.1:0\"\ndatabase_url = {}\nadmin_token = {}\n\n[delivery]\nallow_networks = [\"127.0.0.0/8\"]\n",
        toml_string(&db),
        toml_string(admin_token),
    );
    let path = dir.join("hooklane.toml");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&path).with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(config.as_bytes()).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

fn random_hex(bytes: usize) -> String {
    let mut raw = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut raw);
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

/// A TOML basic string (JSON string escapes are valid TOML escapes).
fn toml_string(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// User + system CPU time of a process from `/proc/<pid>/stat`, in seconds; `"self"` for
/// this one. The kernel reports it in USER_HZ ticks, 100 per second on Linux.
pub fn cpu_seconds_of(pid: &str) -> Option<f64> {
    stat_ticks(pid, 2).map(|ticks| ticks as f64 / 100.0)
}

/// The sum of the first `n` CPU time fields of `/proc/<pid>/stat`: utime and stime (2), and
/// with cutime and cstime (4) the children it has waited for too.
fn stat_ticks(pid: &str, n: usize) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after its ')' are fixed.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime, stime, cutime and cstime are fields 14 to 17 of the whole line, 12 to 15 after
    // the name.
    (11..11 + n).map(|i| fields.get(i)?.parse::<u64>().ok()).sum()
}

/// CPU time of `pid` and of every process under it, in seconds: each one's own and its
/// waited-for children's (a child still running counts through its own line; one ended
/// and waited for, through its parent's).
pub fn tree_cpu_seconds(pid: u32) -> Option<f64> {
    let own = stat_ticks(&pid.to_string(), 4)?;
    let under: u64 = descendants(pid).into_iter().filter_map(|p| stat_ticks(&p.to_string(), 4)).sum();
    Some((own + under) as f64 / 100.0)
}

/// Every live process under `pid`, from each of its threads' `children` lists.
fn descendants(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let mut next = vec![pid];
    while let Some(p) = next.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else { continue };
        for task in tasks.flatten() {
            let Ok(children) = std::fs::read_to_string(task.path().join("children")) else { continue };
            for child in children.split_whitespace().filter_map(|c| c.parse::<u32>().ok()) {
                if !found.contains(&child) {
                    found.push(child);
                    next.push(child);
                }
            }
        }
    }
    found
}

/// A process's peak resident memory (VmHWM), in MiB.
fn peak_rss_mib_of(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Busy and total jiffies of the whole machine (first line of `/proc/stat`): what share of
/// every core was in use during a run, whoever used it.
pub fn machine_cpu_jiffies() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line.split_whitespace().filter_map(|f| f.parse().ok()).collect();
    let total: u64 = v.iter().sum();
    // idle and iowait are fields 4 and 5.
    let idle = v.get(3)? + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A process's tree counts the CPU its children use (as a server's does its
    /// transformation workers'), and their memory.
    #[test]
    fn a_process_tree_counts_its_childrens_cpu() {
        let script = "sh -c 'i=0; while [ $i -lt 400000 ]; do i=$((i+1)); done; sleep 5' & wait";
        let mut parent = std::process::Command::new("sh").args(["-c", script]).spawn().expect("spawn sh");
        let pid = parent.id();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let mut seen = (0.0, Vec::new());
        while std::time::Instant::now() < deadline {
            seen = (tree_cpu_seconds(pid).unwrap_or(0.0), descendants(pid));
            if seen.0 >= 0.2 {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let own = cpu_seconds_of(&pid.to_string()).unwrap_or(0.0);
        let _ = parent.kill();
        let _ = parent.wait();
        assert!(!seen.1.is_empty(), "the child is found");
        assert!(seen.0 >= 0.2 && own < 0.1, "tree {} s, the parent's own {own} s", seen.0);
        assert!(seen.1.iter().all(|c| peak_rss_mib_of(*c).is_some() || !Path::new(&format!("/proc/{c}")).exists()));
    }

    /// The folder and the configuration that hold the admin token and the database URL are
    /// this user's only, whatever the umask; a folder already there is not taken over.
    #[cfg(unix)]
    #[test]
    fn the_configuration_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let parent = tempfile::tempdir().expect("tempdir");
        let dir = parent.path().join("bench");
        create_private_dir(&dir).expect("create");
        let mode = |p: &Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        let url = "postgres://bench:s3cret@127.0.0.1/bench";
        let config = write_config(&dir, Some(url), "sk_token").expect("write");
        assert_eq!(mode(&config), 0o600);
        let text = std::fs::read_to_string(&config).expect("read");
        assert!(text.contains(url) && text.contains("sk_token"), "{text}");
        assert!(create_private_dir(&dir).is_err(), "an existing folder is refused");
        assert!(write_config(&dir, None, "sk_token").is_err(), "an existing file is not written over");
    }
}
