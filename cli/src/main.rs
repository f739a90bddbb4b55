fn main() {
    eprintln!("spark: the command line arrives with the CLI issue");
    std::process::exit(2);
}
