//! The README's "Using the library" shows this example's `src/lib.rs`, so
//! the code a newcomer copies is code that compiles: this test fails when
//! the two differ (copy the file into the README's block to fix it).

const README: &str = include_str!("../../../README.md");
const LIB: &str = include_str!("../src/lib.rs");

/// The first ```rust block after the heading `## Using the library`.
fn readme_block() -> Option<&'static str> {
    let section = &README[README.find("\n## Using the library\n")?..];
    let start = section.find("\n```rust\n")? + "\n```rust\n".len();
    let len = section[start..].find("\n```\n")? + 1;
    Some(&section[start..start + len])
}

#[test]
fn the_readme_shows_this_example_as_it_is() {
    let block = readme_block().expect("README.md has a ```rust block under ## Using the library");
    assert!(
        block == LIB,
        "README.md's \"Using the library\" block is not examples/status/src/lib.rs; \
         copy the file into the block.\n--- README block ---\n{block}\n--- src/lib.rs ---\n{LIB}"
    );
}
