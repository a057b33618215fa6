//! HAProxy's runtime API (the `stats socket … level admin`), over a unix socket or TCP. One
//! command per connection; HAProxy answers with text and closes.

use super::{check_name, Attempt, LbError, LoadBalancer, MemberState, MemberStats, PoolCounters};
use std::net::SocketAddrV4;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, Clone)]
pub enum Endpoint {
    Unix(PathBuf),
    Tcp(String),
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unix(p) => write!(f, "unix:{}", p.display()),
            Self::Tcp(a) => write!(f, "tcp:{a}"),
        }
    }
}

/// Health-check settings for new members (hitless rolling updates need checks with rise/fall
/// and a slow start; RIG.md).
#[derive(Debug, Clone)]
pub struct CheckSettings {
    pub inter_ms: u32,
    pub rise: u32,
    pub fall: u32,
    pub slowstart_ms: u32,
}

impl Default for CheckSettings {
    fn default() -> Self {
        Self {
            inter_ms: 1000,
            rise: 2,
            fall: 2,
            slowstart_ms: 2000,
        }
    }
}

#[derive(Debug, Clone)]
pub struct HaproxyRuntime {
    pub endpoint: Endpoint,
    pub timeout: Duration,
    pub checks: CheckSettings,
}

/// Answers that mean success (HAProxy says nothing, or one of these).
fn is_ok(answer: &str) -> bool {
    let a = answer.trim();
    a.is_empty() || a == "New server registered." || a == "Server deleted."
}

impl HaproxyRuntime {
    pub fn new(endpoint: Endpoint) -> Self {
        Self {
            endpoint,
            timeout: Duration::from_secs(5),
            checks: CheckSettings::default(),
        }
    }

    /// Sends one command and returns the answer. A connection that could not be made is
    /// tried again (a few times, briefly: HAProxy re-creates its socket on reload); one that
    /// broke or timed out after the command was sent is tried again only for commands that
    /// are harmless twice (`show`, `set`, `enable`, `disable`), never for `add`/`del server`.
    pub async fn command(&self, command: &str) -> Result<String, LbError> {
        let repeatable = ["show ", "set ", "enable ", "disable "]
            .iter()
            .any(|p| command.starts_with(p));
        let began = std::time::Instant::now();
        let outcome = super::retrying(repeatable, || self.attempt(command)).await;
        let ms = began.elapsed().as_millis() as u64;
        match &outcome {
            Ok(answer) => tracing::debug!(
                command,
                ms,
                answer = answer.lines().next().unwrap_or(""),
                "haproxy command"
            ),
            Err(e) => tracing::warn!(command, ms, error = %e, "haproxy command failed"),
        }
        outcome
    }

    async fn attempt(&self, command: &str) -> Result<String, Attempt> {
        let endpoint = self.endpoint.to_string();
        let mut sent = false;
        let outcome = tokio::time::timeout(self.timeout, self.exchange(command, &mut sent)).await;
        let err = match outcome {
            Ok(Ok(answer)) if answer.is_empty() => LbError::Connect {
                endpoint,
                attempts: 1,
                // HAProxy ends every answer with a newline, even an empty one.
                source: std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the connection was closed without an answer",
                ),
            },
            Ok(Ok(answer)) => return Ok(answer),
            Ok(Err(source)) => LbError::Connect {
                endpoint,
                attempts: 1,
                source,
            },
            Err(_) => LbError::Timeout {
                endpoint,
                secs: self.timeout.as_secs(),
                attempts: 1,
            },
        };
        Err(if sent {
            Attempt::Unknown(err)
        } else {
            Attempt::NotSent(err)
        })
    }

    /// One connection: the command out, the answer in. `sent` turns true once the
    /// connection is made (from then on the command may reach HAProxy).
    async fn exchange(&self, command: &str, sent: &mut bool) -> std::io::Result<String> {
        let mut answer = String::new();
        match &self.endpoint {
            Endpoint::Unix(path) => {
                let mut s = tokio::net::UnixStream::connect(path).await?;
                *sent = true;
                s.write_all(format!("{command}\n").as_bytes()).await?;
                s.shutdown().await?;
                s.read_to_string(&mut answer).await?;
            }
            Endpoint::Tcp(addr) => {
                let mut s = tokio::net::TcpStream::connect(addr).await?;
                *sent = true;
                s.write_all(format!("{command}\n").as_bytes()).await?;
                s.shutdown().await?;
                s.read_to_string(&mut answer).await?;
            }
        }
        Ok(answer)
    }

    async fn expect_ok(&self, command: String) -> Result<(), LbError> {
        let answer = self.command(&command).await?;
        if is_ok(&answer) {
            Ok(())
        } else {
            Err(LbError::Refused {
                command,
                answer: answer.trim().to_owned(),
            })
        }
    }

    /// Admin states of the members of `pool` from `show servers state`.
    async fn admin_states(&self, pool: &str) -> Result<Vec<(String, MemberState)>, LbError> {
        let answer = self.command(&format!("show servers state {pool}")).await?;
        if answer.contains("Can't find backend") {
            return Err(LbError::NoPool {
                pool: pool.to_owned(),
            });
        }
        Ok(answer
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                // be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state …
                let admin: u32 = f.get(6)?.parse().ok()?;
                let state = if admin & 0x01 != 0 || admin & 0x02 != 0 || admin & 0x04 != 0 {
                    MemberState::Maint
                } else if admin & 0x08 != 0 || admin & 0x10 != 0 {
                    MemberState::Drain
                } else {
                    MemberState::Ready
                };
                Some((f.get(3)?.to_string(), state))
            })
            .collect())
    }
}

/// One member's row of `show stat`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct StatRow {
    pool: String,
    name: String,
    address: String,
    status: String,
    /// The last health check's result (`L7OK`, `L4CON`, `INI`, …); empty without checks.
    check: String,
    /// What that check met, in HAProxy's words (`Connection refused`, `No route to host`, the
    /// HTTP reason); often empty.
    check_said: String,
    sessions: u64,
    queued: u64,
}

/// Parses `show stat` CSV, finding columns by name.
fn parse_stat(csv: &str) -> Vec<StatRow> {
    let mut lines = csv.lines();
    let Some(header) = lines.next().and_then(|h| h.strip_prefix("# ")) else {
        return Vec::new();
    };
    let cols: Vec<&str> = header.split(',').collect();
    let idx = |name: &str| cols.iter().position(|c| *c == name);
    let (Some(px), Some(sv), Some(st), Some(scur), Some(qcur)) = (
        idx("pxname"),
        idx("svname"),
        idx("status"),
        idx("scur"),
        idx("qcur"),
    ) else {
        return Vec::new();
    };
    let addr = idx("addr");
    let check = idx("check_status");
    let said = idx("last_chk");
    let text =
        |f: &[String], i: Option<usize>| i.and_then(|i| f.get(i)).cloned().unwrap_or_default();
    lines
        .filter_map(|l| {
            let f = csv_fields(l);
            let name = f.get(sv)?.as_str();
            if name == "FRONTEND" || name == "BACKEND" {
                return None;
            }
            Some(StatRow {
                pool: f.get(px)?.to_string(),
                name: name.to_string(),
                address: text(&f, addr),
                status: f.get(st)?.to_string(),
                check: text(&f, check).trim_start_matches('*').trim().to_owned(),
                check_said: text(&f, said).chars().take(200).collect(),
                sessions: f.get(scur)?.parse().unwrap_or(0),
                queued: f.get(qcur)?.parse().unwrap_or(0),
            })
        })
        .collect()
}

/// One line of `show stat` CSV as fields. HAProxy quotes a field that holds a comma or a quote
/// (a check's text, `"Bad status, 503"`), doubling the quotes inside.
fn csv_fields(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            '"' if quoted => quoted = false,
            '"' if field.is_empty() => quoted = true,
            ',' if !quoted => out.push(std::mem::take(&mut field)),
            c => field.push(c),
        }
    }
    out.push(field);
    out
}

/// The backend row of `pool` in `show stat` CSV, as counters (columns found by name).
fn parse_backend_counters(csv: &str, pool: &str) -> Option<PoolCounters> {
    let mut lines = csv.lines();
    let header = lines.next()?.strip_prefix("# ")?;
    let cols: Vec<&str> = header.split(',').collect();
    let idx = |name: &str| cols.iter().position(|c| *c == name);
    let (px, sv) = (idx("pxname")?, idx("svname")?);
    lines.find_map(|l| {
        let f: Vec<&str> = l.split(',').collect();
        if f.get(px) != Some(&pool) || f.get(sv) != Some(&"BACKEND") {
            return None;
        }
        let n = |name: &str| -> u64 {
            idx(name)
                .and_then(|i| f.get(i))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        let requests = match n("req_tot") {
            0 => n("stot"),
            r => r,
        };
        Some(PoolCounters {
            requests,
            http_5xx: n("hrsp_5xx"),
            response_errors: n("eresp"),
            connection_errors: n("econ"),
            retried: n("wretr") + n("wredis"),
        })
    })
}

/// One member's health as `show stat` reports it: the monitor's second witness of a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberHealth {
    pub pool: String,
    pub name: String,
    /// HAProxy's status words (`UP`, `DOWN`, `UP 1/2`, `MAINT`, `no check`, …).
    pub status: String,
    /// The last health check's result (`L7OK`, `L4TOUT`, …); empty without checks.
    pub check: String,
    /// What that check met (`last_chk`: `Connection refused`, `No route to host`, …).
    pub check_said: String,
}

impl HaproxyRuntime {
    /// The health of every member of every pool, from one `show stat`.
    pub async fn member_health(&self) -> Result<Vec<MemberHealth>, LbError> {
        let stat = self.command("show stat").await?;
        if !stat.starts_with("# ") {
            // Not the CSV (a socket without the rights, another program): no witness.
            return Err(LbError::Refused {
                command: "show stat".into(),
                answer: stat
                    .lines()
                    .next()
                    .unwrap_or("")
                    .chars()
                    .take(200)
                    .collect(),
            });
        }
        Ok(parse_stat(&stat)
            .into_iter()
            .map(|r| MemberHealth {
                pool: r.pool,
                name: r.name,
                status: r.status,
                check: r.check,
                check_said: r.check_said,
            })
            .collect())
    }

    /// The backend's traffic counters.
    pub async fn pool_counters(&self, pool: &str) -> Result<PoolCounters, LbError> {
        check_name("pool", pool)?;
        let stat = self.command("show stat").await?;
        parse_backend_counters(&stat, pool).ok_or_else(|| LbError::NoPool {
            pool: pool.to_owned(),
        })
    }

    /// Forgets the member's last health-check result: it counts as down until its checks
    /// pass `rise` times again. A restarted server must not inherit the "up" it had before.
    pub async fn member_mark_down(&self, pool: &str, name: &str) -> Result<(), LbError> {
        check_name("pool", pool)?;
        check_name("member", name)?;
        self.expect_ok(format!("set server {pool}/{name} health down"))
            .await
    }
}

impl LoadBalancer for HaproxyRuntime {
    async fn pool_exists(&self, pool: &str) -> Result<bool, LbError> {
        check_name("pool", pool)?;
        match self.admin_states(pool).await {
            Ok(_) => Ok(true),
            Err(LbError::NoPool { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn members(&self, pool: &str) -> Result<Vec<MemberStats>, LbError> {
        check_name("pool", pool)?;
        let admin = self.admin_states(pool).await?;
        let stat = self.command("show stat").await?;
        Ok(parse_stat(&stat)
            .into_iter()
            .filter(|r| r.pool == pool)
            .map(|r| MemberStats {
                admin: admin
                    .iter()
                    .find(|a| a.0 == r.name)
                    .map_or(MemberState::Maint, |a| a.1),
                // "UP 1/2" is up but failing checks: not healthy.
                healthy: (r.status == "UP" || r.status == "DRAIN")
                    && r.check.starts_with('L')
                    && r.check.ends_with("OK"),
                check: r.check,
                name: r.name,
                address: r.address,
                status: r.status,
                sessions: r.sessions,
                queued: r.queued,
            })
            .collect())
    }

    async fn member_add(
        &self,
        pool: &str,
        name: &str,
        address: SocketAddrV4,
    ) -> Result<(), LbError> {
        check_name("pool", pool)?;
        check_name("member", name)?;
        if let Some(existing) = self
            .members(pool)
            .await?
            .into_iter()
            .find(|m| m.name == name)
        {
            if existing.address == address.to_string() {
                return Ok(());
            }
            return Err(LbError::Refused {
                command: format!("add server {pool}/{name} {address}"),
                answer: format!("a member {name} exists at {}", existing.address),
            });
        }
        let c = &self.checks;
        self.expect_ok(format!(
            "add server {pool}/{name} {address} check inter {}ms rise {} fall {} slowstart {}ms",
            c.inter_ms, c.rise, c.fall, c.slowstart_ms
        ))
        .await
    }

    async fn member_set(&self, pool: &str, name: &str, state: MemberState) -> Result<(), LbError> {
        check_name("pool", pool)?;
        check_name("member", name)?;
        match state {
            MemberState::Ready => {
                self.expect_ok(format!("enable health {pool}/{name}"))
                    .await?;
                self.expect_ok(format!("set server {pool}/{name} state ready"))
                    .await
            }
            MemberState::Drain => {
                // Checks run while draining: a starting server is drained until it is healthy.
                self.expect_ok(format!("enable health {pool}/{name}"))
                    .await?;
                self.expect_ok(format!("set server {pool}/{name} state drain"))
                    .await
            }
            MemberState::Maint => {
                self.expect_ok(format!("set server {pool}/{name} state maint"))
                    .await
            }
        }
    }

    async fn member_remove(&self, pool: &str, name: &str) -> Result<bool, LbError> {
        check_name("pool", pool)?;
        check_name("member", name)?;
        let answer = self
            .command(&format!("set server {pool}/{name} state maint"))
            .await?;
        if answer.contains("No such server") {
            return Ok(false);
        }
        if !is_ok(&answer) {
            return Err(LbError::Refused {
                command: format!("set server {pool}/{name} state maint"),
                answer: answer.trim().to_owned(),
            });
        }
        self.expect_ok(format!("del server {pool}/{name}")).await?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lb::check_layer;

    #[test]
    fn names_that_could_inject_commands_are_refused() {
        for bad in [
            "",
            "a b",
            "a\nshutdown sessions",
            "be/x",
            "x;y",
            &"n".repeat(65),
        ] {
            assert!(check_name("member", bad).is_err(), "{bad:?}");
        }
        for ok in ["be_lab", "web-1", "shop.v3"] {
            assert!(check_name("member", ok).is_ok());
        }
    }

    #[test]
    fn a_backend_row_gives_the_pools_counters() {
        let csv =
            "# pxname,svname,qcur,scur,stot,econ,eresp,wretr,wredis,status,hrsp_5xx,req_tot\n\
                   be_app,web-1,0,1,50,0,0,0,0,UP,0,,\n\
                   be_app,BACKEND,0,1,120,3,1,2,1,UP,4,100\n\
                   be_other,BACKEND,0,0,9,0,0,0,0,UP,0,9\n";
        let c = parse_backend_counters(csv, "be_app").unwrap();
        assert_eq!(
            c,
            PoolCounters {
                requests: 100,
                http_5xx: 4,
                response_errors: 1,
                connection_errors: 3,
                retried: 3
            }
        );
        assert_eq!(c.failed(), 5);
        let later = PoolCounters {
            requests: 150,
            http_5xx: 4,
            ..c
        };
        assert_eq!(later.since(&c).requests, 50);
        assert_eq!(later.since(&c).failed(), 0);
        assert!(parse_backend_counters(csv, "be_none").is_none());
        assert_eq!(check_layer("L7OK"), Some("http"));
        assert_eq!(check_layer("L4OK"), Some("tcp"));
        assert_eq!(check_layer(""), None);
    }

    #[test]
    fn show_stat_is_read_by_column_name() {
        let csv = "# pxname,svname,qcur,qmax,scur,smax,status,addr,check_status\n\
                   be_t,w1,1,0,3,0,UP,10.0.0.1:80,* L7OK\n\
                   be_t,BACKEND,0,0,3,0,UP,\n\
                   fe,FRONTEND,0,0,0,0,OPEN,\n";
        assert_eq!(
            parse_stat(csv),
            vec![StatRow {
                pool: "be_t".into(),
                name: "w1".into(),
                address: "10.0.0.1:80".into(),
                status: "UP".into(),
                check: "L7OK".into(),
                check_said: String::new(),
                sessions: 3,
                queued: 1
            }]
        );
        assert!(parse_stat("garbage").is_empty());
        // A check's text with a comma is quoted by HAProxy; the columns after it still line up.
        let csv = "# pxname,svname,qcur,scur,status,check_status,last_chk,addr\n\
                   be_t,w1,0,0,DOWN,L7STS,\"Bad status, \"\"503\"\"\",10.0.0.1:80\n\
                   be_t,w2,0,0,DOWN,L4CON,Connection refused,10.0.0.2:80\n";
        let rows = parse_stat(csv);
        assert_eq!(rows[0].check_said, "Bad status, \"503\"");
        assert_eq!(rows[0].address, "10.0.0.1:80");
        assert_eq!(
            (rows[1].check.as_str(), rows[1].check_said.as_str()),
            ("L4CON", "Connection refused")
        );
    }

    #[tokio::test]
    async fn a_missing_socket_is_a_clear_connect_error() {
        let lb = HaproxyRuntime::new(Endpoint::Unix("/nonexistent/haproxy.sock".into()));
        let err = lb.members("be").await.unwrap_err();
        assert!(matches!(err, LbError::Connect { .. }), "{err:?}");
        assert!(err.to_string().contains("unix:/nonexistent/haproxy.sock"));
    }
}
