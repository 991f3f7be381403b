//! A live `bertrt serve` for tests: the real binary on a loopback port
//! chosen by the OS, raw HTTP from a blocking client, and JSON comparisons.

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const MINILM: &str = "sentence-transformers/all-MiniLM-L6-v2";

pub struct Server {
    pub child: Child,
    pub base: String,
    pub log: Arc<Mutex<String>>,
}

impl Server {
    /// Starts `bertrt serve` on port 0 and reads the bound address from its log.
    pub fn start(model: &str, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_bertrt"));
        cmd.args(["serve", "--model", model, "--device", "cpu", "--port", "0"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start bertrt serve");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let log2 = log.clone();
        // Keeps draining the log so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(i) = line.find("on http://") {
                    // Text logs end the line with the address; JSON logs a quote.
                    let addr = line[i + 3..].split(['"', ' ']).next().unwrap_or("");
                    let _ = tx.send(addr.to_string());
                }
                log2.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        let base = match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(b) => b,
            Err(_) => {
                let _ = child.kill();
                panic!("server did not start:\n{}", log.lock().unwrap());
            }
        };
        let s = Server { child, base, log };
        let (status, _) = s.get("/health");
        assert_eq!(status, 200, "/health after start");
        s
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        answer(agent().get(&self.url(path)).call())
    }

    pub fn post_raw(&self, path: &str, body: &str, key: Option<&str>) -> (u16, String) {
        let mut r = agent()
            .post(&self.url(path))
            .set("content-type", "application/json");
        if let Some(k) = key {
            r = r.set("authorization", &format!("Bearer {k}"));
        }
        answer(r.send_string(body))
    }

    pub fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let (status, text) = self.post_raw(path, &body.to_string(), None);
        let v = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{path}: answer is not JSON ({e}): {text}"));
        (status, v)
    }

    pub fn post_ok(&self, path: &str, body: Value) -> Value {
        let (status, v) = self.post(path, body.clone());
        assert_eq!(status, 200, "{path} {body}: {v}");
        v
    }

    pub fn sigterm(&self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -TERM failed");
    }

    /// Waits (bounded) for the process to exit and returns its code.
    pub fn wait_exit(&mut self) -> Option<i32> {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(60) {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("server did not exit within 60 s of SIGTERM");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(120))
        .build()
}

pub fn answer(r: Result<ureq::Response, ureq::Error>) -> (u16, String) {
    match r {
        Ok(r) => (r.status(), r.into_string().unwrap()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap()),
        Err(e) => panic!("transport error: {e}"),
    }
}

pub fn fixture(name: &str) -> String {
    super::model_dir(name).to_string_lossy().into_owned()
}

pub fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

/// Equal JSON, numbers compared as the f32 they were serialised from.
pub fn assert_same(got: &Value, want: &Value, ctx: &str) {
    match (got, want) {
        (Value::Number(a), Value::Number(b)) => {
            let (a, b) = (a.as_f64().unwrap() as f32, b.as_f64().unwrap() as f32);
            assert_eq!(a, b, "{ctx}: number differs");
        }
        (Value::Array(a), Value::Array(b)) => {
            assert_eq!(a.len(), b.len(), "{ctx}: lengths differ: {got} vs {want}");
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                assert_same(x, y, &format!("{ctx}[{i}]"));
            }
        }
        (Value::Object(a), Value::Object(b)) => {
            assert_eq!(a.len(), b.len(), "{ctx}: keys differ: {got} vs {want}");
            for (k, x) in a {
                assert_same(x, b.get(k).unwrap_or(&Value::Null), &format!("{ctx}.{k}"));
            }
        }
        _ => assert_eq!(got, want, "{ctx}"),
    }
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
