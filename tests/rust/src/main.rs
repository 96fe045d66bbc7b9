//! One chat completion to https://api.openai.com, configured only by the environment:
//! HTTPS_PROXY (reqwest reads it) and SSL_CERT_FILE (rustls-native-certs reads it).
//!   douane-rust-client plain|stream MODEL TEXT
//! Prints the status, the x-douane-request-id header and the body, one per line.
use std::io::Read;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: douane-rust-client plain|stream MODEL TEXT");
        std::process::exit(2);
    }
    let stream = args[1] == "stream";
    let body = format!(
        r#"{{"model": {}, "stream": {}, "messages": [{{"role": "user", "content": {}}}]}}"#,
        json_string(&args[2]), stream, json_string(&args[3])
    );
    let client = reqwest::blocking::Client::builder().build().expect("a client");
    let mut response = match client
        .post("https://api.openai.com/v1/chat/completions")
        .header("authorization", "Bearer sk-rust-client")
        .header("content-type", "application/json")
        .body(body)
        .send()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("request failed: {e:?}");
            std::process::exit(3);
        }
    };
    let id = response.headers().get("x-douane-request-id").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let mut text = String::new();
    response.read_to_string(&mut text).expect("the body");
    println!("{}\n{}\n{}", response.status().as_u16(), id, text);
}

fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
