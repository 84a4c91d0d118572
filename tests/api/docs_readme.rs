//! README's commands against the real server (issue #12, "Docs that cannot drift").
//!
//! Every command of README's ```sh / ```bash blocks and every inline `` `curl …` `` is
//! either run here or listed in [`NOT_RUN`] with the reason; a command in neither fails
//! the test, and so does a listed one that talks to the server. A run command goes to
//! `bash` with `localhost:8080` turned into the test server's address, in a scratch
//! directory where `tests/` is the repository's and the files it reads exist (`x.npy`,
//! `w.npy`); `curl` is wrapped to record each response's status and content type. Every
//! response must be 200, and the output must show what README says ([`EXPECT`]; for a
//! command followed by a ```json block, that block, `{...}` standing for any object).
//! Needs `curl` and `python3` on the PATH (`.ci/run` installs curl when it is missing).

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::docs_support::same;
use crate::helpers::{npy_f32, spawn_app};

/// Commands README shows that this test does not run, by a piece of their text.
const NOT_RUN: &[(&str, &str)] = &[
    (
        "cargo run --release",
        "starts a server of its own on port 8080; the test starts one on 127.0.0.1:0",
    ),
    ("cargo test", "the test suite itself"),
    (
        "apt-get install chromium",
        "installs a system package (.ci/run does it for the browser test)",
    ),
    (
        "node --test tests/e2e/",
        "the browser test, run by .ci/run after cargo test",
    ),
    (
        "docker ",
        "needs Docker and a release image build (minutes); not available in CI",
    ),
];

/// One README command as run: what it printed, and one `(status, content type)` per curl.
struct Ran {
    stdout: Vec<u8>,
    responses: Vec<(u16, String)>,
    dir: PathBuf,
    shows: Option<String>,
}

impl Ran {
    fn json(&self) -> Result<Value, String> {
        serde_json::from_slice(&self.stdout).map_err(|e| format!("not JSON ({e})"))
    }

    fn content_type(&self, want: &str) -> Result<(), String> {
        let ok = self.responses.iter().all(|(_, ct)| ct == want);
        ok.then_some(()).ok_or(format!(
            "content types {:?}, README implies {want}",
            self.responses
        ))
    }

    /// `file` is a PNG of `w×h` with `channels` channels.
    fn png(&self, file: &str, w: u32, h: u32, channels: u8) -> Result<(), String> {
        self.content_type("image/png")?;
        let img = image::open(self.dir.join(file)).map_err(|e| format!("{file}: {e}"))?;
        let got = (img.width(), img.height(), img.color().channel_count());
        (got == (w, h, channels))
            .then_some(())
            .ok_or(format!("{file} is {got:?}, not {:?}", (w, h, channels)))
    }

    /// The JSON output has `value` at `pointer`.
    fn shows_at(&self, pointer: &str, value: Value) -> Result<(), String> {
        self.content_type("application/json")?;
        let out = self.json()?;
        (out.pointer(pointer) == Some(&value))
            .then_some(())
            .ok_or(format!(
                "{pointer} is {:?}, README says {value}",
                out.pointer(pointer)
            ))
    }
}

type Check = fn(&Ran) -> Result<(), String>;

/// What README says each command it runs shows, by a piece of the command's text.
const EXPECT: &[(&str, Check)] = &[
    // Issue #13's formats (before the photos' names, which these commands share).
    ("-o sobel.tif", |r| r.content_type("image/tiff")),
    ("-o blur.webp", |r| r.content_type("image/webp")),
    ("-o maps.zip", |r| r.content_type("application/zip")),
    // Precision in: the upright phone photo, the 16-bit PNG's values, the float TIFF's.
    ("phone_exif6.jpg", |r| {
        r.shows_at("/output_shape", json!([1, 3, 48, 24]))
    }),
    ("depth16.png", |r| {
        r.content_type("application/json")?;
        let out = r.json()?;
        let data = out["data"].as_array().ok_or("no data")?;
        let mut values: Vec<u64> = data
            .iter()
            .filter_map(|v| v.as_f64())
            .map(|v| v as u64)
            .collect();
        values.sort_unstable();
        values.dedup();
        (values.len() == 2048 && values.last() == Some(&63_464))
            .then_some(())
            .ok_or(format!(
                "{} distinct values, largest {:?}",
                values.len(),
                values.last()
            ))
    }),
    ("float32.tif", |r| r.shows_at("/data/0", json!(-1.375))),
    // The textbook example: README shows its answer in the ```json block below it.
    (r#""weight": [[[[0,1],[2,3]]]],"#, |r| {
        r.content_type("application/json")?;
        let shown = r.shows.as_deref().ok_or("no ```json block after it")?;
        let shown: Value =
            serde_json::from_str(&shown.replace("{...}", "{}")).map_err(|e| e.to_string())?;
        same(&shown, &r.json()?, "README")
    }),
    // "padding 1 keeps a 4×4 input 4×4 with a 3×3 kernel"
    (r#""padding": 1}'"#, |r| {
        r.shows_at("/output_shape", json!([1, 1, 4, 4]))
    }),
    // "stride 2 on a 100×100 input with padding 1 gives 50×50" (the first 200 bytes)
    ("| head -c 200", |r| {
        r.content_type("application/json")?;
        let head = String::from_utf8_lossy(&r.stdout);
        (r.stdout.len() == 200 && head.starts_with(r#"{"shape":[1,1,50,50]"#))
            .then_some(())
            .ok_or(format!("printed {head}"))
    }),
    // "two stacked 3×3 layers see 5×5"
    (r#""layers": [{"weight""#, |r| {
        r.shows_at("/receptive_field", json!([5, 5]))
    }),
    // .npy parts and a spec part: `same` padding keeps x.npy's 4×4.
    ("-F input=@x.npy", |r| {
        r.shows_at("/output_shape", json!([1, 1, 4, 4]))
    }),
    // `/shape` plans without computing: padding 1 keeps 56×56.
    ("/v1/conv2d/shape", |r| {
        r.shows_at("/output_shape", json!([8, 64, 56, 56]))
    }),
    // Textbook application 1: "the 1×3 kernel responds only at the boundary (output 50×48)".
    ("app1_edge_input.png", |r| r.png("edge.png", 48, 50, 1)),
    // Application 2: one map summed over R, G, B (3×3 on 512×512).
    ("astronaut.png", |r| r.png("outline.png", 510, 510, 1)),
    // Application 3: a 5×5 mean blur of the gray picture (600×400).
    ("coffee.png", |r| r.png("blur.png", 596, 396, 1)),
];

/// README's commands, in order, the last of a shell block with the ```json block right
/// after it (what README says it shows).
fn readme_commands(readme: &str) -> Vec<(String, Option<String>)> {
    let lines: Vec<&str> = readme.lines().collect();
    let mut out: Vec<(String, Option<String>)> = Vec::new();
    let mut shell_block_ended_at = None;
    let mut i = 0;
    while i < lines.len() {
        if let Some(lang) = lines[i].strip_prefix("```") {
            let end = i
                + 1
                + lines[i + 1..]
                    .iter()
                    .position(|l| l.starts_with("```"))
                    .unwrap();
            let body = &lines[i + 1..end];
            match lang {
                "sh" | "bash" => {
                    out.extend(split_commands(body).into_iter().map(|c| (c, None)));
                    shell_block_ended_at = Some(end);
                }
                "json" if shell_block_ended_at == Some(i - 1) => {
                    out.last_mut().unwrap().1 = Some(body.join("\n"));
                }
                _ => {}
            }
            i = end + 1;
            continue;
        }
        for piece in lines[i].split("`curl ").skip(1) {
            out.push((format!("curl {}", piece.split('`').next().unwrap()), None));
        }
        i += 1;
    }
    out
}

/// The commands of a shell block: lines joined while a line ends in `\` or a single quote
/// is open; comment lines between commands dropped.
fn split_commands(body: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in body {
        if cur.is_empty() && (line.trim().is_empty() || line.trim_start().starts_with('#')) {
            continue;
        }
        if !cur.is_empty() {
            cur.push('\n');
        }
        cur.push_str(line);
        let open_quote = cur.matches('\'').count() % 2 == 1;
        if !open_quote && !line.ends_with('\\') {
            out.push(std::mem::take(&mut cur));
        }
    }
    assert!(cur.is_empty(), "unterminated command in README: {cur}");
    out
}

/// Runs one command with bash in `dir`, curl's responses recorded under `dir/responses`.
fn run(command: &str, dir: &Path) -> Result<Ran, String> {
    let heads = dir.join("responses");
    let _ = std::fs::remove_dir_all(&heads);
    std::fs::create_dir(&heads).unwrap();
    let script = format!(
        "curl() {{ command curl --dump-header \"$(mktemp -p {heads:?})\" \"$@\"; }}\n{command}\n"
    );
    let out = std::process::Command::new("bash")
        .args(["-e", "-c", &script])
        .current_dir(dir)
        .output()
        .map_err(|e| format!("bash: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "exit {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let mut responses = Vec::new();
    for f in std::fs::read_dir(&heads).unwrap() {
        let text = std::fs::read_to_string(f.unwrap().path()).unwrap();
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let ct = text
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-type:")
                    .map(|v| v.trim().to_string())
            })
            .unwrap_or_default();
        responses.push((status, ct));
    }
    if responses.is_empty() || responses.iter().any(|(s, _)| *s != 200) {
        return Err(format!("responses {responses:?}: README shows success"));
    }
    Ok(Ran {
        stdout: out.stdout,
        responses,
        dir: dir.to_path_buf(),
        shows: None,
    })
}

#[tokio::test]
async fn every_readme_command_runs_against_the_server_and_shows_what_readme_says() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let commands = readme_commands(&readme);
    assert!(
        commands.len() >= 10,
        "README's commands not found: {commands:#?}"
    );
    let app = spawn_app().await;

    let dir = std::env::temp_dir().join(format!("convd-readme-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::symlink(root.join("tests"), dir.join("tests")).unwrap();
    // The files README's .npy example uploads: a 4×4 input and a 3×3 kernel.
    let x: Vec<f32> = (0..16).map(|v| v as f32).collect();
    std::fs::write(dir.join("x.npy"), npy_f32(&[1, 1, 4, 4], &x)).unwrap();
    std::fs::write(dir.join("w.npy"), npy_f32(&[1, 1, 3, 3], &[1.0; 9])).unwrap();

    let mut used = vec![false; EXPECT.len()];
    let mut failures = Vec::new();
    for (command, shows) in commands {
        let talks = command.contains("curl") || command.contains("localhost:8080");
        if let Some((_, why)) = NOT_RUN.iter().find(|(piece, _)| command.contains(piece)) {
            assert!(
                !talks,
                "README command talks to the server yet is not run ({why}): {command}"
            );
            continue;
        }
        let (i, (_, check)) = EXPECT
            .iter()
            .enumerate()
            .find(|(_, (piece, _))| command.contains(piece))
            .unwrap_or_else(|| {
                panic!(
                    "a README command with no check here (add one to EXPECT or NOT_RUN): {command}"
                )
            });
        used[i] = true;
        let local = command.replace("localhost:8080", &app.addr.to_string());
        let d = dir.clone();
        let ran = tokio::task::spawn_blocking(move || run(&local, &d))
            .await
            .unwrap();
        let result = ran.and_then(|mut r| {
            r.shows = shows;
            check(&r)
        });
        if let Err(e) = result {
            failures.push(format!("{command}\n  → {e}"));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        failures.is_empty(),
        "README commands that do not do what README says:\n{}",
        failures.join("\n")
    );
    let unused: Vec<_> = EXPECT
        .iter()
        .zip(used)
        .filter(|(_, u)| !u)
        .map(|(e, _)| e.0)
        .collect();
    assert!(
        unused.is_empty(),
        "checks for commands README no longer has: {unused:?}"
    );
}
