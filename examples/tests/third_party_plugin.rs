//! The third-party plugin example runs: the plugin builds from source, loads, accepts a fair
//! roll and refuses a loaded one naming the plugin.

#[path = "../examples/third_party_plugin.rs"]
mod example;

#[test]
fn a_third_party_plugin_builds_loads_and_validates() {
    let component = example::build_dice(&example::target_dir()).expect("the dice plugin builds");
    let (fair, loaded) = example::demo(&component).expect("the demo runs");
    assert!(fair, "a fair roll is stored");
    assert!(
        loaded.contains("dice") && loaded.contains("cannot roll 7"),
        "{loaded}"
    );
}
