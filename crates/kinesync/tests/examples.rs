//! The configs under `examples/` are what users copy: each must read, open its model and
//! compile its payload and keys, so that a change to the config format cannot leave them stale.

use std::path::Path;

use kinesync::Config;

#[test]
fn every_example_config_reads_opens_its_model_and_compiles() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut checked = Vec::new();
    let mut postgres_configs = Vec::new();
    for dir in std::fs::read_dir(&examples).unwrap() {
        let dir = dir.unwrap().path();
        for file in std::fs::read_dir(&dir).unwrap() {
            let path = file.unwrap().path();
            // (A crate's manifest is not a kinesync config: `examples/embed` is a crate.)
            if path.extension().is_none_or(|e| e != "toml") || path.ends_with("Cargo.toml") {
                continue;
            }
            let config = Config::from_file(&path).unwrap_or_else(|e| panic!("{e}"));
            // A Postgres model needs a server: crates/cli/tests/warehouse.rs loads the
            // example's schema into the test kit's PostgreSQL and previews it.
            if config.source().unwrap().is_postgres() {
                postgres_configs.push(path.file_name().unwrap().to_string_lossy().into_owned());
                continue;
            }
            let source = kinesync::source::open(&config.source().unwrap().spec(&config).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            kinesync::records_for(&config, source.schema())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let destination = config.destination().unwrap();
            assert!(
                destination.simulated.is_some() || destination.region.is_some(),
                "{}: a real destination names its region",
                path.display()
            );
            config.sync.limits().validate().unwrap();
            checked.push(path.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    checked.sort();
    assert_eq!(
        checked,
        [
            "access-keys.toml",
            "assume-role.toml",
            "kinesalite.toml",
            "kinesync.toml",
            "profile.toml"
        ]
    );
    assert_eq!(postgres_configs, ["kinesync.toml"], "examples/warehouse");
}
