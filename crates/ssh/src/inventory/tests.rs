use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

fn temp(label: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let dir = std::env::temp_dir().join(format!("inv-{label}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Name, address, port, user, key files and tags: what every format must agree on.
type Summary = (String, String, u16, Option<String>, Vec<PathBuf>, Vec<String>);

fn summary(inv: &Inventory) -> Vec<Summary> {
    inv.hosts
        .iter()
        .map(|h| {
            let mut tags = h.tags.clone();
            tags.sort();
            (h.name.clone(), h.address.clone(), h.port, h.user.clone(), h.identity_files.clone(), tags)
        })
        .collect()
}

fn load(sources: Sources) -> Inventory {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(Inventory::load(&sources))
}

const HOSTS_TOML: &str = r#"
[defaults]
user = "ops"

[[host]]
name = "web-01"
address = "10.0.0.1"
tags = ["web", "prod"]
identity_file = "/keys/web"

[[host]]
name = "web-02"
address = "10.0.0.2"
tags = ["web", "prod"]
identity_file = "/keys/web"

[[host]]
name = "db-1"
address = "10.0.1.1"
port = 2222
user = "postgres"
tags = ["db", "prod"]
"#;

const ANSIBLE_INI: &str = r#"
# comment
[web]
web-[01:02] ansible_ssh_private_key_file=/keys/web

[web:vars]
ignored_var=1

[db]
db-1 ansible_host=10.0.1.1 ansible_port=2222 ansible_user=postgres

[prod:children]
web
db

[all:vars]
ansible_user=ops
"#;

const ANSIBLE_YAML: &str = r#"
all:
  vars:
    ansible_user: ops
  children:
    prod:
      children:
        web:
          hosts:
            web-[01:02]:
              ansible_ssh_private_key_file: /keys/web
        db:
          hosts:
            db-1:
              ansible_host: 10.0.1.1
              ansible_port: 2222
              ansible_user: postgres
"#;

const ANSIBLE_JSON: &str = r#"{
  "web": {"hosts": ["web-01", "web-02"], "vars": {"ansible_ssh_private_key_file": "/keys/web"}},
  "db": ["db-1"],
  "prod": {"children": ["web", "db"]},
  "all": {"vars": {"ansible_user": "ops"}},
  "_meta": {"hostvars": {
    "web-01": {"ansible_host": "10.0.0.1"},
    "web-02": {"ansible_host": "10.0.0.2"},
    "db-1": {"ansible_host": "10.0.1.1", "ansible_port": 2222, "ansible_user": "postgres"}
  }}
}"#;

const SSH_CONFIG: &str = r#"
Host web-01
    HostName 10.0.0.1
Host web-02
    HostName 10.0.0.2
Host web-*
    IdentityFile /keys/web
Host db-1
    HostName 10.0.1.1
    Port 2222
    User postgres
Host *
    User ops
"#;

#[test]
fn every_format_loads_the_same_hosts() {
    let dir = temp("same");
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let toml = load(Sources { hosts_files: vec![write("hosts.toml", HOSTS_TOML)], ..Sources::default() });
    assert!(toml.problems.is_empty(), "{:?}", toml.problems);
    assert_eq!(toml.hosts.len(), 3);
    let expected = summary(&toml);

    // Ansible INI lacks web addresses; give them the same way YAML/JSON do, per host.
    let ini_text = ANSIBLE_INI.replace(
        "web-[01:02] ansible_ssh_private_key_file=/keys/web",
        "web-01 ansible_host=10.0.0.1 ansible_ssh_private_key_file=/keys/web\nweb-02 ansible_host=10.0.0.2 ansible_ssh_private_key_file=/keys/web",
    );
    let ini = load(Sources { ansible: vec![write("inventory.ini", &ini_text)], ..Sources::default() });
    assert!(ini.problems.is_empty(), "{:?}", ini.problems);
    assert_eq!(summary(&ini), expected, "INI");

    let yaml_text = ANSIBLE_YAML.replace(
        "            web-[01:02]:\n              ansible_ssh_private_key_file: /keys/web\n",
        "            web-01: {ansible_host: 10.0.0.1, ansible_ssh_private_key_file: /keys/web}\n            web-02: {ansible_host: 10.0.0.2, ansible_ssh_private_key_file: /keys/web}\n",
    );
    let yaml = load(Sources { ansible: vec![write("inventory.yml", &yaml_text)], ..Sources::default() });
    assert!(yaml.problems.is_empty(), "{:?}", yaml.problems);
    assert_eq!(summary(&yaml), expected, "YAML");

    let script = write(
        "inventory.sh",
        &format!("#!/bin/sh\n[ \"$1\" = --list ] || exit 9\ncat <<'JSON'\n{ANSIBLE_JSON}\nJSON\n"),
    );
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let dynamic = load(Sources {
        dynamic: vec![vec![script.display().to_string()]],
        dynamic_timeout: Duration::from_secs(10),
        ..Sources::default()
    });
    assert!(dynamic.problems.is_empty(), "{:?}", dynamic.problems);
    assert_eq!(summary(&dynamic), expected, "dynamic JSON");

    // ssh_config has no groups; tags aside, the hosts are the same.
    let ssh = load(Sources { ssh_configs: vec![write("config", SSH_CONFIG)], ..Sources::default() });
    assert!(ssh.problems.is_empty(), "{:?}", ssh.problems);
    let untagged: Vec<_> =
        expected.iter().map(|(n, a, p, u, i, _)| (n.clone(), a.clone(), *p, u.clone(), i.clone(), vec![])).collect();
    assert_eq!(summary(&ssh), untagged, "ssh_config");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn ranges_expand_as_ansible_does() {
    assert_eq!(expand_ranges("web-[01:03]").unwrap(), ["web-01", "web-02", "web-03"]);
    assert_eq!(expand_ranges("db-[a:c]-[1:2]").unwrap(), ["db-a-1", "db-a-2", "db-b-1", "db-b-2", "db-c-1", "db-c-2"]);
    assert_eq!(expand_ranges("n[0:10:5]").unwrap(), ["n0", "n5", "n10"]);
    assert!(expand_ranges("x[3:1]").unwrap_err().contains("ends before"));
    assert!(expand_ranges("x[0:99999999]").unwrap_err().contains("more than"));
    assert!(expand_ranges("x[1:2").unwrap_err().contains("without ']'"));
}

fn problems_of(inv: &Inventory, file: &Path) -> Vec<(usize, String)> {
    let f = file.display().to_string();
    inv.problems.iter().filter(|p| p.file == f).map(|p| (p.line, p.message.clone())).collect()
}

#[test]
fn bad_lines_are_reported_and_the_rest_loads() {
    let dir = temp("bad");
    let toml = dir.join("hosts.toml");
    std::fs::write(
        &toml,
        "[[host]]\nname = \"ok-1\"\n\n[[host]]\nname = \"broken\nport = 22\n\n[[host]]\nname = \"pw\"\npassword = \"hunter2\"\n\n[[host]]\nname = \"ok-2\"\nprot = 22\n\n[[host]]\nname = \"ok-3\"\n",
    )
    .unwrap();
    let ini = dir.join("inv.ini");
    std::fs::write(
        &ini,
        "[web]\nw1 ansible_port=22\nw2 notkeyvalue\nw3 ansible_password=secret\n[web\nw4\n[x:vars]\nnovalue\n",
    )
    .unwrap();
    let yaml = dir.join("inv.yml");
    std::fs::write(&yaml, "all:\n  hosts:\n    y1:\n    y2: [1, 2]\n  bogus: 1\n").unwrap();
    let ssh = dir.join("ssh_config");
    std::fs::write(&ssh, "Host s1\n  Port notaport\nHost s2\nMatch user x\n  Port 1\nHost s3\n").unwrap();
    let inv = load(Sources {
        hosts_files: vec![toml.clone(), dir.join("missing.toml")],
        ansible: vec![ini.clone(), yaml.clone()],
        ssh_configs: vec![ssh.clone()],
        ..Sources::default()
    });
    let names: Vec<&str> = inv.hosts.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, ["ok-1", "ok-3", "s2", "s3", "w1", "w4", "y1"], "{:#?}", inv.problems);

    let t = problems_of(&inv, &toml);
    assert_eq!(t.iter().map(|(l, _)| *l).collect::<Vec<_>>(), [5, 8, 14], "{t:?}");
    assert!(t[1].1.contains("literal passwords") && !t[1].1.contains("hunter2"), "{t:?}");
    assert!(t[2].1.contains("prot"), "{t:?}");
    let i = problems_of(&inv, &ini);
    assert_eq!(i.iter().map(|(l, _)| *l).collect::<Vec<_>>(), [3, 4, 5, 8], "{i:?}");
    assert!(i[1].1.contains("literal passwords") && !i[1].1.contains("secret"), "{i:?}");
    let y = problems_of(&inv, &yaml);
    assert_eq!(y.iter().map(|(l, _)| *l).collect::<Vec<_>>(), [4, 5], "{y:?}");
    let s = problems_of(&inv, &ssh);
    assert_eq!(s.iter().map(|(l, _)| *l).collect::<Vec<_>>(), [1, 4], "{s:?}");
    assert!(inv.problems.iter().any(|p| p.file.ends_with("missing.toml") && p.message.contains("cannot read")));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn ssh_config_resolves_as_openssh_does() {
    let dir = temp("sshcfg");
    let inc = dir.join("conf.d");
    std::fs::create_dir_all(&inc).unwrap();
    std::fs::write(inc.join("a.conf"), "Host included\n  HostName 10.9.9.9\n").unwrap();
    let cfg = dir.join("config");
    std::fs::write(
        &cfg,
        format!(
            "Include {}/*.conf\nHost bastion\n  HostName bastion.example.com\n  User jump\n\
             Host app-1 app-2\n  HostName %h.internal\n  ProxyJump bastion\n  IdentityFile /k/one\n\
             Host app-* !app-2\n  Port 2200\n  IdentityFile /k/two\n  User first\nHost *\n  User second\n  Port 22\n",
            inc.display()
        ),
    )
    .unwrap();
    let inv = load(Sources { ssh_configs: vec![cfg], ..Sources::default() });
    assert!(inv.problems.is_empty(), "{:?}", inv.problems);
    let app1 = inv.get("app-1").unwrap();
    assert_eq!((app1.address.as_str(), app1.port, app1.user.as_deref()), ("app-1.internal", 2200, Some("first")));
    assert_eq!(app1.identity_files, [PathBuf::from("/k/one"), PathBuf::from("/k/two")]);
    assert_eq!(app1.proxy_jump.as_deref(), Some("bastion"));
    let app2 = inv.get("app-2").unwrap();
    assert_eq!((app2.port, app2.user.as_deref()), (22, Some("second")));
    assert_eq!(inv.get("included").unwrap().address, "10.9.9.9");
    assert_eq!(inv.get("bastion").unwrap().user.as_deref(), Some("jump"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_first_source_wins_a_duplicate_name() {
    let dir = temp("dup");
    let a = dir.join("a.toml");
    let b = dir.join("b.ini");
    std::fs::write(&a, "[[host]]\nname = \"h\"\naddress = \"1.1.1.1\"\n").unwrap();
    std::fs::write(&b, "h ansible_host=2.2.2.2\n").unwrap();
    let inv = load(Sources { hosts_files: vec![a], ansible: vec![b.clone()], ..Sources::default() });
    assert_eq!(inv.get("h").unwrap().address, "1.1.1.1");
    assert_eq!(problems_of(&inv, &b).len(), 1);
    assert!(problems_of(&inv, &b)[0].1.contains("already defined"));
    std::fs::remove_dir_all(&dir).unwrap();
}
