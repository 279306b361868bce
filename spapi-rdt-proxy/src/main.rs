//! The `spapi-rdt-proxy` binary: everything is in the library, [`spapi_rdt_proxy::main`].

fn main() -> std::process::ExitCode {
    spapi_rdt_proxy::main()
}
