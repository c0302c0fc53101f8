//! `APT_PROXY` must answer before a build starts (the original ran `curl --silent APT_PROXY`).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Sends `GET /` to the proxy and waits for an HTTP status line. For `https://` proxies only
/// the TCP connection is checked. Returns why it failed, as a phrase.
pub fn probe(url: &str, timeout: Duration) -> Result<(), String> {
    let (https, rest) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
        (Some(rest), _) => (false, rest),
        (_, Some(rest)) => (true, rest),
        _ => return Err("not an http:// or https:// URL".into()),
    };
    let authority = rest.split('/').next().unwrap_or("");
    let authority = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let has_port = authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.chars().all(|c| c.is_ascii_digit()) && !authority.ends_with(']'));
    let target = if has_port {
        authority.to_string()
    } else {
        format!("{authority}:{}", if https { 443 } else { 80 })
    };
    let addrs: Vec<_> = target
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {authority}: {e}"))?
        .collect();
    let mut last = format!("{authority} has no address");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(mut stream) => {
                if https {
                    return Ok(());
                }
                let _ = stream.set_read_timeout(Some(timeout));
                let _ = stream.set_write_timeout(Some(timeout));
                let request =
                    format!("GET / HTTP/1.0\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
                stream
                    .write_all(request.as_bytes())
                    .map_err(|e| format!("sending to {addr}: {e}"))?;
                let mut head = [0u8; 5];
                return match stream.read_exact(&mut head) {
                    Ok(()) if &head == b"HTTP/" => Ok(()),
                    Ok(()) => Err(format!("{addr} answered, but not with HTTP")),
                    Err(e) => Err(format!(
                        "no HTTP answer from {addr} within {} s ({e})",
                        timeout.as_secs()
                    )),
                };
            }
            Err(e) => last = format!("cannot connect to {addr} ({e})"),
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn answers_from_a_local_http_server() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut buf = [0u8; 512];
            let _ = conn.read(&mut buf);
            conn.write_all(b"HTTP/1.0 406 Usage Information\r\n\r\n")
                .unwrap();
        });
        assert_eq!(
            probe(&format!("http://127.0.0.1:{port}/"), Duration::from_secs(3)),
            Ok(())
        );
        server.join().unwrap();
    }

    #[test]
    fn refused_and_silent_servers_fail() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let err = probe(&format!("http://127.0.0.1:{port}"), Duration::from_secs(2)).unwrap_err();
        assert!(err.starts_with("cannot connect to 127.0.0.1"), "{err}");

        let silent = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = silent.local_addr().unwrap().port();
        let err = probe(&format!("http://127.0.0.1:{port}"), Duration::from_secs(1)).unwrap_err();
        assert!(err.starts_with("no HTTP answer"), "{err}");
        drop(silent);
    }
}
