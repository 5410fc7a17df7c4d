//! `meshmon-agent` binary entry point. The collection pipeline arrives in issue 3.

fn main() {
    println!(
        "meshmon-agent {} (wire schema {}): the collection pipeline is not built yet",
        env!("CARGO_PKG_VERSION"),
        meshmon_agent::WIRE_PACKAGE
    );
}
