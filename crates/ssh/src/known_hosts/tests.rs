use super::*;

// Made with `ssh-keygen -t ed25519` and hashed with `ssh-keygen -H` for `[127.0.0.1]:2222`.
const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOB+68fWmy8J66Fe7ppRINUOw406wg9BCnJ6N5q/a5xn";
const HASHED: &str = "|1|9yJ2ttJNYSsdq/NvgSnaf/WHJPI=|xisLcOgtRH94nb2y/IHoIYcXDU4=";
const OTHER: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHi5yCz3r6tqVBJ4SAPjW1OSTzVFeuGKcc5Y3mBvCTbM";

fn key(text: &str) -> PublicKey {
    PublicKey::from_openssh(text).unwrap()
}

fn verdict(lines: &[String], address: &str, port: u16, k: &str) -> Verdict {
    let dir = std::env::temp_dir().join(format!("kh-test-{}-{}", std::process::id(), rand_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("known_hosts");
    std::fs::write(&file, lines.join("\n")).unwrap();
    let v = check(&[dir.join("missing"), file], address, port, &key(k));
    std::fs::remove_dir_all(&dir).unwrap();
    v
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
}

#[test]
fn hashed_plain_and_bracketed_entries() {
    assert_eq!(verdict(&[format!("{HASHED} {KEY}")], "127.0.0.1", 2222, KEY), Verdict::Trusted);
    assert_eq!(verdict(&[format!("{HASHED} {KEY}")], "127.0.0.1", 2223, KEY), Verdict::Unknown);
    assert_eq!(verdict(&[format!("web1,10.0.0.1 {KEY}")], "10.0.0.1", 22, KEY), Verdict::Trusted);
    assert_eq!(verdict(&[format!("[web1]:2200 {KEY}")], "web1", 2200, KEY), Verdict::Trusted);
    // Port 22 is never written with brackets, and a bracketed entry is only for its port.
    assert_eq!(verdict(&[format!("[web1]:2200 {KEY}")], "web1", 22, KEY), Verdict::Unknown);
    assert_eq!(verdict(&[format!("*.example.com,!bad.example.com {KEY}")], "a.example.com", 22, KEY), Verdict::Trusted);
    assert_eq!(
        verdict(&[format!("*.example.com,!bad.example.com {KEY}")], "bad.example.com", 22, KEY),
        Verdict::Unknown
    );
    assert_eq!(verdict(&[format!("# web1 {KEY}"), String::new(), "garbage".into()], "web1", 22, KEY), Verdict::Unknown);
}

#[test]
fn other_keys_and_revocations() {
    let changed = verdict(&[format!("web1 {OTHER}")], "web1", 22, KEY);
    assert!(matches!(changed, Verdict::Changed { ref known_at } if known_at.ends_with(":1")), "{changed:?}");
    // Any listed key is enough, as with a host that has several key types.
    assert_eq!(verdict(&[format!("web1 {OTHER}"), format!("web1 {KEY}")], "web1", 22, KEY), Verdict::Trusted);
    let revoked = verdict(&[format!("web1 {KEY}"), format!("@revoked * {KEY}")], "web1", 22, KEY);
    assert!(matches!(revoked, Verdict::Revoked { ref at } if at.ends_with(":2")), "{revoked:?}");
    // Certificate authorities are not host keys.
    assert_eq!(verdict(&[format!("@cert-authority web1 {KEY}")], "web1", 22, KEY), Verdict::Unknown);
}

#[test]
fn recorded_keys_are_found_again() {
    let dir = std::env::temp_dir().join(format!("kh-rec-{}-{}", std::process::id(), rand_suffix()));
    let file = dir.join("sub").join("known_hosts");
    record(&file, "127.0.0.1", 2222, &key(KEY)).unwrap();
    record(&file, "web1", 22, &key(OTHER)).unwrap();
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(text, format!("[127.0.0.1]:2222 {KEY}\nweb1 {OTHER}\n"));
    assert_eq!(check(std::slice::from_ref(&file), "127.0.0.1", 2222, &key(KEY)), Verdict::Trusted);
    std::fs::remove_dir_all(&dir).unwrap();
}
