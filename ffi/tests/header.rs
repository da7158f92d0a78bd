//! The committed header must be what cbindgen generates from the source, and
//! the version must agree in Cargo.toml, the header and the library.

use std::ffi::CStr;
use std::path::PathBuf;

fn workspace_file(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
}

fn generated_header() -> String {
    let crate_dir = env!("CARGO_MANIFEST_DIR");
    let config = cbindgen::Config::from_file(format!("{crate_dir}/cbindgen.toml"))
        .expect("cbindgen.toml parses");
    let bindings = cbindgen::Builder::new()
        .with_crate(crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen generates the header");
    let mut out = Vec::new();
    bindings.write(&mut out);
    String::from_utf8(out).expect("the header is UTF-8")
}

#[test]
fn committed_header_is_current() {
    let generated = generated_header();
    let path = workspace_file("include/specdec.h");
    if std::env::var_os("SPECDEC_BLESS").is_some() {
        std::fs::write(&path, &generated).expect("include/specdec.h is writable");
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "include/specdec.h differs from what cbindgen generates; run \
         `SPECDEC_BLESS=1 cargo test -p specdec-ffi --test header` and commit the result"
    );
}

#[test]
fn version_agrees_everywhere() {
    let cargo = env!("CARGO_PKG_VERSION");
    // SAFETY: specdec_version returns a static NUL-terminated string.
    let library = unsafe { CStr::from_ptr(specdec::specdec_version()) }
        .to_str()
        .unwrap();
    assert_eq!(library, cargo, "specdec_version() differs from Cargo.toml");
    let parts: Vec<u32> = cargo.split('.').map(|p| p.parse().unwrap()).collect();
    assert_eq!(
        parts,
        [
            specdec::SPECDEC_VERSION_MAJOR,
            specdec::SPECDEC_VERSION_MINOR,
            specdec::SPECDEC_VERSION_PATCH
        ],
        "version constants differ from Cargo.toml"
    );
    let header = std::fs::read_to_string(workspace_file("include/specdec.h")).unwrap();
    assert!(
        header.contains(&format!("#define SPECDEC_VERSION \"{cargo}\"")),
        "SPECDEC_VERSION differs from Cargo.toml"
    );
    for (name, value) in [
        ("MAJOR", parts[0]),
        ("MINOR", parts[1]),
        ("PATCH", parts[2]),
    ] {
        assert!(
            header.contains(&format!("#define SPECDEC_VERSION_{name} {value}")),
            "SPECDEC_VERSION_{name} differs from Cargo.toml"
        );
    }
}

#[test]
fn status_messages_cover_every_code() {
    for status in 0..=13 {
        // SAFETY: static NUL-terminated strings.
        let message = unsafe { CStr::from_ptr(specdec::specdec_status_message(status)) }
            .to_str()
            .unwrap();
        assert_ne!(
            message, "unknown status value",
            "status {status} has no message"
        );
    }
    // SAFETY: as above.
    let unknown = unsafe { CStr::from_ptr(specdec::specdec_status_message(99)) }
        .to_str()
        .unwrap();
    assert_eq!(unknown, "unknown status value");
}
