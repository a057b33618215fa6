//! The client against BMCs that misbehave: a raw TCP server on 127.0.0.1 that answers each
//! request with canned bytes (garbage, huge bodies, silence, redirects, foreign targets).
//! The well-behaved Redfish cases run against the lab's stand-in (`tests/rig/bmc.py`) and
//! the OpenStack emulator (sushy-tools) in `tests/bmc.rs` and `tests/tests/redfish_sushy.rs`.

use super::*;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PASSWORD: &str = "pw-Zq81-never-shown";

/// One request as the server read it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    head: String,
    body: String,
}

enum Reply {
    Bytes(Vec<u8>),
    /// Keep the connection open and say nothing.
    Hang,
}

fn json(status: &str, body: &str) -> Reply {
    Reply::Bytes(
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

type Handler = Arc<dyn Fn(&Seen) -> Reply + Send + Sync>;

struct Fake {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

/// A server answering every request with `handler`; stops with the test's runtime.
async fn fake(handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> Fake {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let handler: Handler = Arc::new(handler);
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let handler = handler.clone();
            let log = log.clone();
            tokio::spawn(async move {
                let Some(req) = read_request(&mut sock).await else {
                    // As a plain HTTP server answers what is not HTTP (a TLS hello).
                    let _ = sock
                        .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                        .await;
                    return;
                };
                log.lock().unwrap().push(req.clone());
                match handler(&req) {
                    Reply::Bytes(b) => {
                        let _ = sock.write_all(&b).await;
                        let _ = sock.shutdown().await;
                    }
                    Reply::Hang => {
                        tokio::time::sleep(Duration::from_secs(600)).await;
                    }
                }
            });
        }
    });
    Fake { url, seen }
}

async fn read_request(sock: &mut tokio::net::TcpStream) -> Option<Seen> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if !buf[0].is_ascii_alphabetic() {
            return None;
        }
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap_or(0))
        })
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let mut first = head.lines().next()?.split(' ');
    Some(Seen {
        method: first.next()?.to_owned(),
        path: first.next()?.to_owned(),
        body: String::from_utf8_lossy(&buf[head_end..]).to_string(),
        head,
    })
}

fn limits() -> Limits {
    Limits {
        connect: Duration::from_secs(2),
        request: Duration::from_secs(1),
        max_body: 64 * 1024,
        poll: Duration::from_millis(100),
    }
}

fn client(url: &str, system: &str) -> Redfish {
    Redfish::new(
        BmcTarget {
            url: BmcUrl::parse(url).unwrap(),
            system: SystemId::parse(system).unwrap(),
            user: BmcUser::parse("admin").unwrap(),
            ca_pem: None,
        },
        Secret::parse(PASSWORD).unwrap(),
        limits(),
    )
    .unwrap()
}

fn system_json(state: &str, actions: &str) -> String {
    format!(
        r#"{{"@odata.id":"/redfish/v1/Systems/1","Id":"1","Name":"lab host","PowerState":{state}{actions}}}"#
    )
}

/// What every error must hold to: no password, nothing unbounded.
fn assert_fit(e: &BmcError) -> String {
    let text = e.to_string();
    assert!(!text.contains(PASSWORD), "{text}");
    assert!(text.len() < 800, "{} bytes: {text}", text.len());
    let mut next = std::error::Error::source(e);
    while let Some(s) = next {
        assert!(!s.to_string().contains(PASSWORD));
        next = s.source();
    }
    text
}

#[tokio::test]
async fn reads_the_power_state_with_basic_auth() {
    let bmc = fake(|_| json("200 OK", &system_json(r#""On""#, ""))).await;
    let info = client(&bmc.url, "1").system().await.unwrap();
    assert_eq!(info.power_state, PowerState::On);
    assert_eq!(info.name, "lab host");
    assert_eq!(
        info.reset_target.path(),
        "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset"
    );
    assert_eq!(info.reset_types, None);
    let seen = bmc.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        (seen[0].method.as_str(), seen[0].path.as_str()),
        ("GET", "/redfish/v1/Systems/1")
    );
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("admin:{PASSWORD}"));
    assert!(
        seen[0]
            .head
            .contains(&format!("authorization: Basic {auth}")),
        "{}",
        seen[0].head
    );
}

#[tokio::test]
async fn answers_that_are_not_redfish_are_refused_with_the_reason() {
    for (body, says) in [
        ("<html>login</html>".to_owned(), "not JSON"),
        ("[1,2,3]".to_owned(), "a list, not an object"),
        (r#"{"Id":"1"}"#.to_owned(), "has no PowerState"),
        (system_json("42", ""), "PowerState is a number"),
        (
            format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)),
            "not JSON",
        ),
        (
            system_json(
                r#""On""#,
                r##","Actions":{"#ComputerSystem.Reset":{"target":7}}"##,
            ),
            "reset target is a number",
        ),
    ] {
        let b = body.clone();
        let bmc = fake(move |_| json("200 OK", &b)).await;
        let e = client(&bmc.url, "1").system().await.unwrap_err();
        let text = assert_fit(&e);
        assert!(matches!(e, BmcError::BadAnswer { .. }), "{text}");
        assert!(
            text.contains(says),
            "{}: {text}",
            &body[..body.len().min(40)]
        );
    }
}

#[tokio::test]
async fn odd_power_states_are_shown_cut_and_cleaned() {
    let weird = format!(r#""\u001b[31m{}""#, "X".repeat(500));
    let bmc = fake(move |_| json("200 OK", &system_json(&weird, ""))).await;
    let state = client(&bmc.url, "1").power_state().await.unwrap();
    let PowerState::Other(s) = state else {
        panic!("{state:?}")
    };
    assert!(!s.contains('\u{1b}') && s.chars().count() <= 33, "{s}");
    let bmc = fake(|_| json("200 OK", &system_json("null", ""))).await;
    assert_eq!(
        client(&bmc.url, "1").power_state().await.unwrap(),
        PowerState::Other("unknown".into())
    );
}

#[tokio::test]
async fn a_huge_answer_is_refused_without_reading_it_all() {
    // Announced: refused from the header.
    let bmc = fake(|_| {
        Reply::Bytes(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000000\r\n\r\n{"
                .to_vec(),
        )
    })
    .await;
    let e = client(&bmc.url, "1").system().await.unwrap_err();
    assert!(assert_fit(&e).contains("larger than 64 KiB"), "{e}");
    // Not announced (chunked, then more than the limit): refused while reading.
    let bmc = fake(|_| {
        let mut b = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for _ in 0..100 {
            b.extend_from_slice(b"1000\r\n");
            b.extend_from_slice(&[b' '; 0x1000]);
            b.extend_from_slice(b"\r\n");
        }
        b.extend_from_slice(b"0\r\n\r\n");
        Reply::Bytes(b)
    })
    .await;
    let e = client(&bmc.url, "1").system().await.unwrap_err();
    assert!(assert_fit(&e).contains("larger than 64 KiB"), "{e}");
}

#[tokio::test]
async fn a_bmc_that_never_answers_times_out() {
    let bmc = fake(|_| Reply::Hang).await;
    let began = std::time::Instant::now();
    let e = client(&bmc.url, "1").system().await.unwrap_err();
    let text = assert_fit(&e);
    assert!(e.is_timeout(), "{text}");
    assert!(text.contains("did not answer within 1 s"), "{text}");
    assert!(began.elapsed() < Duration::from_secs(5));
    // An answer that starts and then stalls: the same limit holds for the body.
    let bmc = fake(|_| {
        Reply::Bytes(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{\"PowerState\":".to_vec())
    })
    .await;
    let e = client(&bmc.url, "1").system().await.unwrap_err();
    assert!(!e.to_string().is_empty());
}

#[tokio::test]
async fn nothing_listening_is_unreachable() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let e = client(&format!("http://127.0.0.1:{port}"), "1")
        .system()
        .await
        .unwrap_err();
    let text = assert_fit(&e);
    assert!(e.is_unreachable(), "{text}");
    assert!(
        text.contains("cannot reach the BMC http://127.0.0.1:") && text.contains("refused"),
        "{text}"
    );
}

#[tokio::test]
async fn refusals_say_what_to_check() {
    let bmc = fake(|_| json("401 Unauthorized", "{}")).await;
    let e = client(&bmc.url, "1").system().await.unwrap_err();
    let text = assert_fit(&e);
    assert!(e.is_refused());
    assert!(
        text.starts_with("BMC http://127.0.0.1:")
            && text.contains(
                "refused: HTTP 401 on GET /redfish/v1/Systems/1 (check the BMC user and password)"
            ),
        "{text}"
    );
    let bmc = fake(|s| {
        if s.method == "POST" {
            json("403 Forbidden", "{}")
        } else {
            json("200 OK", &system_json(r#""On""#, ""))
        }
    })
    .await;
    let e = client(&bmc.url, "1")
        .power_off(Duration::from_secs(2), &|_| {})
        .await
        .unwrap_err();
    let text = assert_fit(&e);
    assert!(
        text.contains("HTTP 403 on ForceOff") && text.contains("Operator or Administrator"),
        "{text}"
    );
}

#[tokio::test]
async fn an_unknown_system_lists_the_ones_there_are() {
    let bmc = fake(|s| match s.path.as_str() {
        "/redfish/v1/Systems" => json(
            "200 OK",
            r#"{"Members":[{"@odata.id":"/redfish/v1/Systems/1"},{"@odata.id":"/redfish/v1/Systems/2/"},{"@odata.id":5}]}"#,
        ),
        _ => json("404 Not Found", r#"{"error":{"message":"no such resource"}}"#),
    })
    .await;
    let e = client(&bmc.url, "7").system().await.unwrap_err();
    let text = assert_fit(&e);
    assert!(text.ends_with("has no system '7' (it has: 1, 2)"), "{text}");
    // A collection it cannot list: says so rather than "none".
    let bmc = fake(|s| match s.path.as_str() {
        "/redfish/v1/Systems" => json("500 Internal Server Error", "{}"),
        _ => json("404 Not Found", "{}"),
    })
    .await;
    let text = assert_fit(&client(&bmc.url, "7").system().await.unwrap_err());
    assert!(
        text.contains("could not be read either") && text.contains("HTTP 500"),
        "{text}"
    );
}

#[tokio::test]
async fn redfish_error_messages_are_shown_cut_and_cleaned() {
    let msg = format!("Internal\u{1b}[2J error {}", "y".repeat(1000));
    let body = serde_json::json!({"error": {"code": "Base.1.0.GeneralError", "message": "short", "@Message.ExtendedInfo": [{"Message": msg}]}}).to_string();
    let bmc = fake(move |_| json("500 Internal Server Error", &body)).await;
    let e = client(&bmc.url, "1").system().await.unwrap_err();
    let text = assert_fit(&e);
    assert!(
        text.contains("with HTTP 500: Internal[2J error yyy"),
        "{text}"
    );
    assert!(!text.contains('\u{1b}') && text.len() < 400, "{text}");
}

#[tokio::test]
async fn a_redirect_on_the_same_bmc_is_followed() {
    let bmc = fake(|s| {
        if s.path == "/redfish/v1/Systems/by-name" {
            Reply::Bytes(
                b"HTTP/1.1 307 Temporary Redirect\r\nLocation: /redfish/v1/Systems/1\r\nContent-Length: 0\r\n\r\n".to_vec(),
            )
        } else {
            json("200 OK", &system_json(r#""Off""#, ""))
        }
    })
    .await;
    let info = client(&bmc.url, "by-name").system().await.unwrap();
    assert_eq!(info.power_state, PowerState::Off);
    let seen = bmc.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert!(
        seen[1].head.contains("authorization: Basic"),
        "{}",
        seen[1].head
    );
}

#[tokio::test]
async fn redirects_elsewhere_are_not_followed() {
    let other = fake(|_| json("200 OK", &system_json(r#""Off""#, ""))).await;
    let to = format!("{}/redfish/v1/Systems/1", other.url);
    let bmc = fake(move |_| {
        Reply::Bytes(
            format!("HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\n\r\n")
                .into_bytes(),
        )
    })
    .await;
    let e = client(&bmc.url, "1").system().await.unwrap_err();
    assert!(assert_fit(&e).contains("with HTTP 302"), "{e}");
    assert!(
        other.seen.lock().unwrap().is_empty(),
        "the password went nowhere else"
    );
}

#[tokio::test]
async fn a_reset_target_on_another_host_is_refused_and_never_sent_the_password() {
    let other = fake(|_| json("204 No Content", "")).await;
    for target in [
        format!(
            "{}/redfish/v1/Systems/1/Actions/ComputerSystem.Reset",
            other.url
        ),
        format!("//{}/x", other.url.trim_start_matches("http://")),
        "https://127.0.0.1/x".to_owned(),
        "file:///etc/passwd".to_owned(),
        "/redfish/v1/Systems/1/Actions/Reset\n".to_owned(),
        String::new(),
    ] {
        let actions = format!(
            r##","Actions":{{"#ComputerSystem.Reset":{{"target":{}}}}}"##,
            serde_json::Value::String(target.clone())
        );
        let bmc = fake(move |_| json("200 OK", &system_json(r#""On""#, &actions))).await;
        let e = client(&bmc.url, "1")
            .power_off(Duration::from_secs(1), &|_| {})
            .await
            .unwrap_err();
        let text = assert_fit(&e);
        assert!(matches!(e, BmcError::BadAnswer { .. }), "{target}: {text}");
        assert!(text.contains("reset action's target"), "{target}: {text}");
        assert!(
            bmc.seen.lock().unwrap().iter().all(|s| s.method == "GET"),
            "nothing was posted"
        );
    }
    assert!(
        other.seen.lock().unwrap().is_empty(),
        "the password went nowhere else"
    );
}

#[tokio::test]
async fn power_off_uses_the_advertised_target_and_waits_for_off() {
    let state = Arc::new(Mutex::new(("On", 0u32)));
    let s2 = state.clone();
    let bmc = fake(move |s| {
        let mut st = s2.lock().unwrap();
        if s.method == "POST" {
            assert_eq!(s.path, "/custom/reset");
            assert!(s.body.contains(r#""ResetType":"ForceOff""#), "{}", s.body);
            st.0 = "PoweringOff";
            return json("202 Accepted", "{}");
        }
        // Off on the third read after the reset.
        if st.0 == "PoweringOff" {
            st.1 += 1;
            if st.1 >= 3 {
                st.0 = "Off";
            }
        }
        json(
            "200 OK",
            &system_json(
                &format!("\"{}\"", st.0),
                r##","Actions":{"#ComputerSystem.Reset":{"target":"/custom/reset","ResetType@Redfish.AllowableValues":["On","ForceOff"]}}"##,
            ),
        )
    })
    .await;
    let said = Mutex::new(Vec::new());
    let done = client(&bmc.url, "1")
        .power_off(Duration::from_secs(5), &|m| {
            said.lock().unwrap().push(m.to_owned())
        })
        .await
        .unwrap();
    assert_eq!(
        done,
        PowerOff {
            before: PowerState::On,
            sent: true
        }
    );
    let said = said.into_inner().unwrap();
    assert!(said[0].ends_with("system 1: PowerState On"), "{said:?}");
    assert!(
        said.iter().any(|m| m.ends_with("sending ForceOff")),
        "{said:?}"
    );
    assert!(
        said.iter().any(|m| m.contains("PowerState PoweringOff")),
        "{said:?}"
    );
    assert!(said.last().unwrap().ends_with("PowerState Off"), "{said:?}");
    let posts = bmc
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.method == "POST")
        .count();
    assert_eq!(posts, 1);
}

#[tokio::test]
async fn a_system_already_off_is_not_sent_anything() {
    let bmc = fake(|_| json("200 OK", &system_json(r#""Off""#, ""))).await;
    let done = client(&bmc.url, "1")
        .power_off(Duration::from_secs(1), &|_| {})
        .await
        .unwrap();
    assert_eq!(
        done,
        PowerOff {
            before: PowerState::Off,
            sent: false
        }
    );
    assert!(bmc.seen.lock().unwrap().iter().all(|s| s.method == "GET"));
}

#[tokio::test]
async fn a_system_that_stays_on_is_reported_after_the_limit() {
    let bmc = fake(|s| {
        if s.method == "POST" {
            json("204 No Content", "")
        } else {
            json("200 OK", &system_json(r#""On""#, ""))
        }
    })
    .await;
    let began = std::time::Instant::now();
    let e = client(&bmc.url, "1")
        .power_off(Duration::from_secs(2), &|_| {})
        .await
        .unwrap_err();
    let text = assert_fit(&e);
    assert!(e.is_timeout());
    assert!(
        text.starts_with("power state of system 1 still On 2 s after ForceOff"),
        "{text}"
    );
    let took = began.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

#[tokio::test]
async fn a_bmc_without_force_off_says_what_it_offers() {
    let bmc = fake(|_| {
        json(
            "200 OK",
            &system_json(
                r#""On""#,
                r##","Actions":{"#ComputerSystem.Reset":{"target":"/r","ResetType@Redfish.AllowableValues":["On","GracefulShutdown"]}}"##,
            ),
        )
    })
    .await;
    let e = client(&bmc.url, "1")
        .power_off(Duration::from_secs(1), &|_| {})
        .await
        .unwrap_err();
    assert!(
        assert_fit(&e)
            .contains("does not offer ForceOff for system 1 (it offers: On, GracefulShutdown)"),
        "{e}"
    );
}

#[tokio::test]
async fn a_refused_reset_of_a_system_that_went_off_meanwhile_counts_as_off() {
    let posted = Arc::new(Mutex::new(false));
    let p2 = posted.clone();
    let bmc = fake(move |s| {
        let mut p = p2.lock().unwrap();
        if s.method == "POST" {
            *p = true;
            return json("409 Conflict", r#"{"error":{"message":"already off"}}"#);
        }
        json(
            "200 OK",
            &system_json(if *p { r#""Off""# } else { r#""On""# }, ""),
        )
    })
    .await;
    let done = client(&bmc.url, "1")
        .power_off(Duration::from_secs(2), &|_| {})
        .await
        .unwrap();
    assert!(done.sent);
}

#[tokio::test]
async fn https_to_a_server_that_does_not_speak_tls_fails_clearly() {
    // A plain-HTTP listener reached with https:// (only possible on loopback here: the
    // https:// form is what counts).
    let bmc = fake(|_| json("200 OK", "{}")).await;
    let url = bmc.url.replace("http://", "https://");
    let e = client(&url, "1").system().await.unwrap_err();
    let text = assert_fit(&e);
    assert!(e.is_unreachable(), "{text}");
}

#[test]
fn ca_files_are_checked() {
    for (pem, says) in [
        (String::new(), "no -----BEGIN CERTIFICATE-----"),
        ("hello".to_owned(), "no -----BEGIN CERTIFICATE-----"),
        (
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".to_owned(),
            "cannot be used",
        ),
        (
            "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n".to_owned(),
            "cannot be read",
        ),
        ("x".repeat(MAX_CA_PEM + 1), "256 KiB"),
    ] {
        let e = check_ca(&pem).expect_err(&pem[..pem.len().min(30)]);
        assert!(e.to_string().contains(says), "{e}");
    }
}
