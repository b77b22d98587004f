//! Compile tests of `#[rl_triplet]` (trybuild): the forms it accepts, and its argument mistakes
//! reported as compile errors pointing at the argument.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.compile_fail("tests/ui/fail/*.rs");
}
