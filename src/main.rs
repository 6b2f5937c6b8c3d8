//! The `msgext` binary: everything lives in the library.

fn main() -> std::process::ExitCode {
    msgext::app::main()
}
