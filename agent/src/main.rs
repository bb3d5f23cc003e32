fn main() -> std::process::ExitCode {
    pitlink::cli::main()
}
