use super::*;

fn attribute(scope: Scope, name: &str) -> FieldExpr {
    FieldExpr::Field(Field::Attribute {
        scope,
        name: name.into(),
    })
}

fn binary(op: BinaryOp, left: FieldExpr, right: FieldExpr) -> FieldExpr {
    FieldExpr::Binary(op, Box::new(left), Box::new(right))
}

fn search_filter(text: &str) -> FieldExpr {
    match parse(text)
        .unwrap_or_else(|error| panic!("{text}: {error}"))
        .body
    {
        Body::Search(Pipeline { stages }) => match stages.as_slice() {
            [Stage::Spansets(Spansets::Filter(Some(expr)))] => expr.clone(),
            other => panic!("{text}: {other:?}"),
        },
        other => panic!("{text}: {other:?}"),
    }
}

fn spansets_of(text: &str) -> Spansets {
    match parse(text)
        .unwrap_or_else(|error| panic!("{text}: {error}"))
        .body
    {
        Body::Search(Pipeline { mut stages }) if stages.len() == 1 => match stages.remove(0) {
            Stage::Spansets(spansets) => spansets,
            other => panic!("{text}: {other:?}"),
        },
        other => panic!("{text}: {other:?}"),
    }
}

/// Forms from every part of Tempo's grammar that it accepts.
#[test]
fn accepts_the_language() {
    let accepted = [
        "{}",
        "{ true }",
        "{ !true }",
        "{ 1 = 2 }",
        "{ -1 = 2 }",
        r#"{ "a" =~ "a.*" }"#,
        "{ .a }",
        "{ !.a }",
        "{ -.a = 2 }",
        r#"{ !("x" != .c || ((true && .b) || 3 < .a)) }"#,
        "{ status = ok } && { kind = consumer }",
        r#"{ statusMessage =~ ".*" }"#,
        "{ traceDuration > 1s } || { rootServiceName = \"a\" } || { rootName != \"b\" }",
        "{ 1 < 1h && 1 <= 1.1 }",
        r#"{ event.foo = "bar" && link.foo = "bar" && instrumentation.foo = "bar" }"#,
        r#"{ ."foo bar" = "v" && span."a\"b" = "v" && resource."x y" = 1 }"#,
        "{ trace:duration > 2s && trace:rootName = \"a\" && trace:rootService = \"a\" && trace:id = \"ab\" }",
        "{ span:duration > 2s && span:status = error && span:kind = client && span:name = \"a\" }",
        r#"{ span:statusMessage = "m" && span:id = "61" && span:parentID = "84" && span:childCount > 1 }"#,
        r#"{ event:name = "exception" && event:timeSinceStart > 1s }"#,
        r#"{ link:traceID = "f1" && link:spanID = "f1" }"#,
        r#"{ instrumentation:name = "grpc" && instrumentation:version = "v3" }"#,
        "{ 1 + 1 = 2 && .a - 1 = 2 && .a * 1 = 2 && .a / 1 = 2 && .a ^ 1 = 2 && .a % 2 = 1 }",
        "{ duration > 1s * 2s && duration < (10s * 20s) && 1 * 1h = 1 }",
        r#"{ .http.status >= "200" }"#,
        "{ nestedSetLeft > 3 }",
        "{ nil != nil } && { nil = nil } && { .foo != nil } && { name != nil }",
        "{ true } >> { true }",
        "{ true } << { true }",
        "{ true } > { true }",
        "{ true } < { true }",
        "{ true } ~ { true }",
        "{ true } !> { true }",
        "{ true } !< { true }",
        "{ true } !~ { true }",
        "{ true } !>> { true }",
        "{ true } !<< { true }",
        "{ true } &> { true }",
        "{ true } &< { true }",
        "{ true } &~ { true }",
        "{ true } &>> { true }",
        "{ true } &<< { true }",
        "({ true } | count() > 1 | { false }) >> ({ true } | count() > 1 | { false })",
        "({ true } | count() > 1 | { false }) && ({ true } | count() > 1 | { false })",
        "avg(.field) > 1",
        "max(duration) >= 1s",
        "{ true } | max((1 + .a) * 2) = 1",
        "max(duration) > 3s | { status = error || .http.status = 500 }",
        "select(.a)",
        "{} | select(.a,.b,.c)",
        "count() = 1 | { true }",
        "{ true } | coalesce()",
        "{ true } | by(1 + .a) | coalesce()",
        "by(.a) | { true }",
        "{ true } | by(name) | count() > 2",
        "{ true } | by(3 * .field - 2) | max(duration) < 1s",
        "min(span:childCount) < 2 / 6",
        "avg(.field) > 1 - 3",
        "({ true } | count()) > 1",
        "{ } >> { kind = server } | select(nestedSetLeft, nestedSetRight, nestedSetParent)",
        "{} | rate()",
        "{} | count_over_time() by (name) with(sample=0.1)",
        "{} | min_over_time(duration) by (span.http.path)",
        "{} | quantile_over_time(duration, 0, 0.9, 1) by (span.http.path)",
        "{} | histogram_over_time(duration)",
        "{} | compare({status = error}, 10, 1700000000000000000, 1700000060000000000)",
        "{} | rate() by (span.client_ip) | topk(10)",
        "{} | avg_over_time(duration) by (span:name) | bottomk(10)",
        "{} | rate() by (span.client_ip) >= 5.5",
        "{} | rate() > -3",
        "({} | max_over_time(duration)) > 10s",
        "({} | rate()) + ({} | count_over_time())",
        "(({} | rate()) * ({} | count_over_time())) + ({} | rate())",
        "({} | rate()) + ({} | rate()) | topk(5) > 10",
        "1 + 2 + ({} | rate())",
        "({} | rate()) * -100",
        "-1.5 / ({} | rate())",
        "({} | rate() > 6) * 100 > 5",
        "({} | rate()) * 10 + 5 > 50 | topk(1)",
        "{} | rate() | topk(5) > 20 | bottomk (10) <= 10",
        "{} | count_over_time() = 0 | topk(10) with(sample=0.1)",
        "{ resource.service.name = \"a\" } | rate() with(most_recent=true, sample=true)",
        "{nestedSetParent<0 && true} | rate()  with(sample=true)",
        "({nestedSetParent<0} &>> { kind = server }) || ({nestedSetParent<0}) | select(status, resource.service.name, name, nestedSetParent, nestedSetLeft, nestedSetRight)",
        "{ status = error } | select(resource.service.name, event.exception.message,event.exception.stacktrace,event.exception.type) with(most_recent=true)",
    ];
    for text in accepted {
        if let Err(error) = parse(text) {
            panic!("{text}: {error}");
        }
    }
}

/// What Tempo refuses, each with a 400-worthy reason.
#[test]
fn refuses_what_tempo_refuses() {
    let refused = [
        "true",
        "[ true ]",
        "( true )",
        "{ . }",
        "{ < }",
        "{ .a < }",
        "{ .a < 3",
        "{ (.a < 3 }",
        "{ attribute = 4 }",
        "{ .attribute == 4 }",
        "{} | rate() == 42",
        "{ span. }",
        "{ true } + { true }",
        "{ true } = { true }",
        "{ true } <= { true }",
        r#"max(name) = "foo""#,
        "max(status) = ok",
        "min(parent) = nil",
        "avg(.field) + 1",
        "sum(3) - 2",
        "select(.a",
        "select()",
        r#"select(1 + "string")"#,
        "coalesce() | { true }",
        "count() > 3 && { true }",
        "{ true } | count()",
        "{ true } | notAnAggregate() = 1",
        "{ true } | count = 1",
        "{ true } | max() = 1",
        "{ true } | by()",
        "({ true }) && (count())",
        "({ true } | count()) + ({ true } | count())",
        "5 + {} | rate()",
        "{} | rate() + 5",
        "2 * 3",
        "3 = 2",
        "({} | rate()) % 10",
        r#"{ .foo = "a" } | 3 > 2"#,
        "({} | rate()) + 5 100",
        "{ trace:status = error }",
        "{ trace:rootServiceName = \"a\" }",
        "{ span:rootName = \"bar\" }",
        "{} | topk(10)",
        "{} | rate() | topk(-1)",
        "{} > 10",
        "({}) + ({})",
        "({} | rate()) ^ ({} | count_over_time())",
        "({} | rate()) >> ({} | count_over_time())",
        "({} | rate()) * 100000000000000000000000000000",
        "({} | rate()) > (10s * 2)",
        "({} | rate()) * 10s",
        // types
        "{ status }",
        "{ 1.1 }",
        "{ \"foo\" }",
        "{ 1 + 1 }",
        "{ 1 + \"foo\" = 1 }",
        "{ 1 = \"foo\" }",
        "{ 1 > ok }",
        "{ 1 =~ 2 }",
        "{ 1 && \"foo\" }",
        "{ status > ok }",
        "{ kind < consumer }",
        "{ traceDuration > \"test\" }",
        "{ rootServiceName = 1 }",
        "{ \"foo\" = span:childCount }",
        "{ span:status = nil }",
        "{ resource.service.name = nil }",
        "{ -true }",
        "{ !ok = status }",
        "{ !1 = 1 }",
        "min(1 = 3) = 1",
        "sum(3) = 2",
        "{ true } | by(1)",
        "{ nestedSetLeft = \"foo\" }",
        "{} | rate() | topk(0)",
        "{} | compare({status=error}) | topk(10)",
        "{} | compare({status=error}) > 10",
        "({} | compare({status=error})) + ({} | compare({status=error}))",
        // unsupported in Tempo too
        "min(.field) < max(duration)",
        "{ parent.a != 3 }",
        "{ true } | max(parent.a) = 1",
        "({ .a } | count()) > ({ .b } | count())",
    ];
    for text in refused {
        let error = parse(text).expect_err(text);
        assert!(error.position >= 1, "{text}: {error}");
    }
}

#[test]
fn and_and_or_share_one_level_left_to_right() {
    // Tempo's grammar: `%left AND OR`, so `a || b && c` is `(a || b) && c`.
    let a = || {
        binary(
            BinaryOp::Eq,
            attribute(Scope::Any, "a"),
            FieldExpr::Value(Value::Int(1)),
        )
    };
    let b = || {
        binary(
            BinaryOp::Eq,
            attribute(Scope::Any, "b"),
            FieldExpr::Value(Value::Int(2)),
        )
    };
    let c = || {
        binary(
            BinaryOp::Eq,
            attribute(Scope::Any, "c"),
            FieldExpr::Value(Value::Int(3)),
        )
    };
    assert_eq!(
        search_filter("{ .a = 1 || .b = 2 && .c = 3 }"),
        binary(BinaryOp::And, binary(BinaryOp::Or, a(), b()), c())
    );
    assert_eq!(
        search_filter("{ .a = 1 && .b = 2 || .c = 3 }"),
        binary(BinaryOp::Or, binary(BinaryOp::And, a(), b()), c())
    );
    let filter = |name: &str| {
        Box::new(Spansets::Filter(Some(binary(
            BinaryOp::Eq,
            FieldExpr::Field(Field::Intrinsic(Intrinsic::Name)),
            FieldExpr::Value(Value::Text(name.into())),
        ))))
    };
    // Spanset relations bind tighter than && and ||, and chain leftwards.
    assert_eq!(
        spansets_of(r#"{ name = "a" } || { name = "b" } >> { name = "c" } > { name = "d" }"#),
        Spansets::Op(
            SpansetOp::Union,
            filter("a"),
            Box::new(Spansets::Op(
                SpansetOp::Child,
                Box::new(Spansets::Op(
                    SpansetOp::Descendant,
                    filter("b"),
                    filter("c")
                )),
                filter("d"),
            )),
        )
    );
}

#[test]
fn arithmetic_binds_as_tempo_binds_it() {
    let int = |value| FieldExpr::Value(Value::Int(value));
    // `^` is right-associative and binds tighter than `*`.
    assert_eq!(
        search_filter("{ 2 * 3 ^ 2 ^ 1 = .a }"),
        binary(
            BinaryOp::Eq,
            binary(
                BinaryOp::Mul,
                int(2),
                binary(BinaryOp::Pow, int(3), binary(BinaryOp::Pow, int(2), int(1)))
            ),
            attribute(Scope::Any, "a")
        )
    );
    // Inside a filter, unary minus binds like binary minus: `-.a * 2` is
    // `-(.a * 2)`, `-.a + 2` is `(-.a) + 2`.
    assert_eq!(
        search_filter("{ -.a * 2 = 1 }"),
        binary(
            BinaryOp::Eq,
            FieldExpr::Negate(Box::new(binary(
                BinaryOp::Mul,
                attribute(Scope::Any, "a"),
                int(2)
            ))),
            int(1)
        )
    );
    assert_eq!(
        search_filter("{ -.a + 2 = 1 }"),
        binary(
            BinaryOp::Eq,
            binary(
                BinaryOp::Add,
                FieldExpr::Negate(Box::new(attribute(Scope::Any, "a"))),
                int(2)
            ),
            int(1)
        )
    );
    // `x = nil` and `x != nil` test presence.
    assert_eq!(
        search_filter("{ span.a = nil }"),
        FieldExpr::NotExists(Box::new(attribute(Scope::Span, "a")))
    );
    // Scalars fold with integer division, as Tempo does.
    assert_eq!(folded("1 / 2").unwrap(), 0.0);
    assert_eq!(folded("1.0 / 2").unwrap(), 0.5);
    assert_eq!(folded("-2 - 20 / 4").unwrap(), -7.0);
}

#[test]
fn metrics_queries_take_their_parts() {
    let query = parse("{ kind = server } | quantile_over_time(duration, .5, 0.99) by (resource.service.name, span.x) | topk(3) > 1 with(sample=0.1)").unwrap();
    let Body::Metrics(MetricsExpr::Staged(inner, stages)) = query.body else {
        panic!("{query:?}");
    };
    assert_eq!(
        stages,
        vec![
            SecondStage::TopK(3),
            SecondStage::Filter(Comparison::Gt, 1.0)
        ]
    );
    let MetricsExpr::Query(inner) = *inner else {
        panic!("{inner:?}");
    };
    assert_eq!(
        inner.function,
        MetricsFunction::QuantileOverTime(Field::Intrinsic(Intrinsic::Duration), vec![0.5, 0.99])
    );
    assert_eq!(inner.by.len(), 2);
    assert_eq!(query.hints.get("sample"), Some(&Value::Float(0.1)));
    let math = parse("100 * ({ status = error } | rate()) / ({} | rate())").unwrap();
    let Body::Metrics(MetricsExpr::Math(MathOp::Div, left, _)) = math.body else {
        panic!("{math:?}");
    };
    assert!(matches!(
        *left,
        MetricsExpr::Scalar {
            op: MathOp::Mul,
            scalar_first: true,
            ..
        }
    ));
}

#[test]
fn errors_point_at_the_position() {
    let cases = [
        ("", 1, "empty"),
        ("{", 2, "found the end"),
        ("{ duration > }", 14, "expected an expression"),
        ("{ foo = 1 }", 3, "unknown identifier"),
        ("{ .a = \"x }", 8, "unterminated"),
        ("{ .a = 1 } |", 13, "found the end"),
        ("{ .a = 1 } | rate", 14, "function"),
        ("{ .a = 1 } }", 12, "unexpected"),
        ("{ .a # 1 }", 6, "unexpected character"),
        ("duration > 1s", 1, "braces"),
        ("{} | rates()", 6, "unknown function rates()"),
    ];
    for (text, position, needle) in cases {
        let error = parse(text).expect_err(text);
        assert_eq!(error.position, position, "{text}: {error}");
        assert!(error.message.contains(needle), "{text}: {error}");
    }
    let deep = format!("{}{{}}{}", "(".repeat(300), ")".repeat(300));
    assert!(parse(&deep).unwrap_err().message.contains("nested"));
    let long_chain = vec!["{ .a = 1 }"; 400].join(" && ");
    assert!(parse(&long_chain).unwrap_err().message.contains("nested"));
}

proptest::proptest! {
    #[test]
    fn never_panics(text in "\\PC{0,80}") {
        let _ = parse(&text);
    }

    #[test]
    fn never_panics_on_traceql_shaped_text(
        parts in proptest::collection::vec(
            proptest::sample::select(vec![
                "{", "}", "(", ")", "&&", "||", "!", ">>", ">", "~", "|", "=", "!=", "=~",
                ".a", "span.b", "resource.c", "duration", "status", "error", "\"x\"", "&>>",
                "1", "1.5s", "-", "count()", "avg(duration)", "by(.a)", "nil", ",", "rate()",
                "topk(2)", "+", "*", "^", "with(sample=true)", "quantile_over_time(duration, .5)",
            ]),
            0..24,
        )
    ) {
        let _ = parse(&parts.join(" "));
    }
}

#[test]
fn tag_names_read_as_fields() {
    use crate::traceql::parse_field;
    let attribute = |scope, name: &str| {
        Some(Field::Attribute {
            scope,
            name: name.into(),
        })
    };
    assert_eq!(
        parse_field("status"),
        Some(Field::Intrinsic(Intrinsic::Status))
    );
    assert_eq!(
        parse_field("span:id"),
        Some(Field::Intrinsic(Intrinsic::SpanId))
    );
    assert_eq!(
        parse_field("event:name"),
        Some(Field::Intrinsic(Intrinsic::EventName))
    );
    assert_eq!(
        parse_field("span.say \"hi\""),
        attribute(Scope::Span, "say \"hi\"")
    );
    assert_eq!(parse_field("span.\"a b\""), attribute(Scope::Span, "a b"));
    assert_eq!(parse_field(".x"), attribute(Scope::Any, "x"));
    assert_eq!(
        parse_field("event.exception.type"),
        attribute(Scope::Event, "exception.type")
    );
    assert_eq!(parse_field("span."), None);
    assert_eq!(parse_field("bogus"), None);
    assert_eq!(parse_field("trace:status"), None);
}
