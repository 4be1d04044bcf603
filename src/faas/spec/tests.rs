//! The functions file: a good file read in full, and each way a bad one is refused, with a
//! message naming the function and the key.

use super::*;

fn parse(text: &str) -> Result<FaasSpec, SpecError> {
    FaasSpec::parse(Path::new("functions.toml"), text)
}

fn refused(text: &str) -> String {
    parse(text).expect_err("refused").to_string()
}

/// Every key of both kinds is read, with defaults for those left out.
#[test]
fn a_full_file_is_read_with_defaults_filled_in() {
    let spec = parse(
        r#"
        servers = ["127.0.0.1:6808", "localhost:7808"]
        name = "sidecar"
        protocol = "v1"
        reload_interval_ms = 250
        metrics_addr = "127.0.0.1:9809"

        [[function]]
        name = "Upper"
        command = ["tr", "a-z", "A-Z"]
        concurrency = 2
        timeout_ms = 500
        env = { LANG = "C" }
        workdir = "/tmp"

        [[function]]
        name = "Orders"
        url = "http://127.0.0.1:8080/orders"
        headers = { "X-Api" = "1" }
        "#,
    )
    .unwrap();
    assert_eq!(spec.servers, ["127.0.0.1:6808", "localhost:7808"]);
    assert_eq!(
        (spec.name.as_str(), spec.protocol),
        ("sidecar", Protocol::V1)
    );
    assert_eq!(spec.reload_interval, Duration::from_millis(250));
    assert_eq!(
        spec.stop_timeout,
        Duration::from_millis(DEFAULT_STOP_TIMEOUT_MS)
    );
    assert_eq!(spec.metrics_addr, Some("127.0.0.1:9809".parse().unwrap()));
    let upper = &spec.functions[0];
    assert_eq!(
        (upper.concurrency, upper.timeout),
        (2, Duration::from_millis(500))
    );
    let FunctionKind::Exec(exec) = &upper.kind else {
        panic!("exec expected")
    };
    assert_eq!(exec.command, ["tr", "a-z", "A-Z"]);
    assert_eq!(exec.env["LANG"], "C");
    let orders = &spec.functions[1];
    assert_eq!(orders.concurrency, DEFAULT_CONCURRENCY);
    assert_eq!(orders.max_output_bytes, DEFAULT_MAX_OUTPUT_BYTES as usize);
    let FunctionKind::Http(http) = &orders.kind else {
        panic!("http expected")
    };
    assert_eq!(
        http.connect_timeout,
        Duration::from_millis(DEFAULT_CONNECT_TIMEOUT_MS)
    );
    assert_eq!(http.headers["X-Api"], "1");
}

/// An empty file is valid: no functions yet (they can be added by editing it).
#[test]
fn an_empty_file_serves_nothing_yet() {
    let spec = parse("").unwrap();
    assert!(spec.functions.is_empty());
    assert_eq!(spec.protocol, Protocol::Tagged);
}

/// Each bad function key is refused with the function's name, its number and the key.
#[test]
fn bad_function_keys_name_the_function_and_the_key() {
    let cases = [
        (
            r#"command = ["tr"]
            comand = 1"#,
            "key `comand`: unknown key",
        ),
        (r#"command = []"#, "key `command`: must name a program"),
        (
            r#"command = "tr a-z""#,
            "key `command`: must be an array of strings",
        ),
        (
            r#"command = ["no-such-program-nmid"]"#,
            "not found (or not executable) in PATH",
        ),
        (
            r#"url = "http://127.0.0.1:1/" 
            command = ["tr"]"#,
            "set exactly one of `command`",
        ),
        (r#""#, "set exactly one of `command`"),
        (r#"url = "https://example.com/""#, "key `url`"),
        (r#"url = "not a url""#, "key `url`"),
        (
            r#"url = "http://127.0.0.1:1/"
            env = { A = "b" }"#,
            "key `env`: applies to exec functions",
        ),
        (
            r#"command = ["tr"]
            headers = { A = "b" }"#,
            "key `headers`: applies to http functions",
        ),
        (
            r#"command = ["tr"]
            concurrency = 0"#,
            "key `concurrency`: must be 1 to 1024",
        ),
        (
            r#"command = ["tr"]
            concurrency = "two""#,
            "key `concurrency`: must be an integer",
        ),
        (
            r#"command = ["tr"]
            timeout_ms = 0"#,
            "key `timeout_ms`",
        ),
        (
            r#"command = ["tr"]
            timeout_ms = -5"#,
            "key `timeout_ms`: must not be negative",
        ),
        (
            r#"command = ["tr"]
            max_output_bytes = 0"#,
            "key `max_output_bytes`",
        ),
        (
            r#"command = ["tr"]
            workdir = "/no/such/dir""#,
            "key `workdir`: /no/such/dir is not a directory",
        ),
        (
            r#"command = ["tr"]
            env = { "A=B" = "c" }"#,
            "key `env`",
        ),
        (
            r#"command = ["tr"]
            env = { A = 1 }"#,
            "key `env`: must be a table of strings",
        ),
    ];
    for (body, want) in cases {
        let text = format!("[[function]]\nname = \"F\"\n{body}\n");
        let message = refused(&text);
        assert!(
            message.contains("function `F` ([[function]] number 1)") && message.contains(want),
            "{body}: {message}"
        );
    }
}

/// A function without a name, and two with one name, are refused.
#[test]
fn missing_and_duplicate_names_are_refused() {
    let message = refused("[[function]]\ncommand = [\"tr\"]\n");
    assert!(
        message.contains("function `?`") && message.contains("key `name`: missing"),
        "{message}"
    );
    let message = refused(
        "[[function]]\nname = \"F\"\ncommand = [\"tr\"]\n[[function]]\nname = \"F\"\ncommand = [\"cat\"]\n",
    );
    assert!(
        message.contains("number 2") && message.contains("defined twice"),
        "{message}"
    );
}

/// Bad top-level keys are named; bad TOML says where.
#[test]
fn bad_top_level_keys_and_syntax_are_named() {
    let cases = [
        ("server = [\"a:1\"]", "key `server`: unknown key"),
        (
            "servers = [\"nohost\"]",
            "key `servers`: \"nohost\" is not HOST:PORT",
        ),
        ("protocol = \"v2\"", "key `protocol`"),
        ("reload_interval_ms = 5", "key `reload_interval_ms`"),
        ("metrics_addr = \"nowhere\"", "key `metrics_addr`"),
        ("name = \"\"", "key `name`"),
        ("function = 3", "key `function`: must be an array of tables"),
        ("[[function]\nname = 1", "is not valid TOML"),
    ];
    for (text, want) in cases {
        let message = refused(text);
        assert!(message.starts_with("functions.toml"), "{message}");
        assert!(message.contains(want), "{text}: {message}");
    }
}

/// A missing file and a huge file are refused before parsing.
#[test]
fn unreadable_and_oversized_files_are_refused() {
    let missing = FaasSpec::load(Path::new("/no/such/functions.toml")).unwrap_err();
    assert!(missing
        .to_string()
        .starts_with("cannot read /no/such/functions.toml"));
    let big = std::env::temp_dir().join(format!("nmid-faas-big-{}.toml", std::process::id()));
    std::fs::write(&big, vec![b'#'; MAX_FILE_BYTES as usize + 1]).unwrap();
    let refused = FaasSpec::load(&big).unwrap_err();
    std::fs::remove_file(&big).unwrap();
    assert!(matches!(refused, SpecError::TooLarge { .. }), "{refused}");
}
