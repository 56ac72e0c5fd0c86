//! Parses TraceQL into [`Query`] in two steps.
//!
//! 1. A precedence parser reads the tokens into an untyped tree, with
//!    Tempo's levels (`expr.y`, lowest first): `|`; `&&` `||` (one level,
//!    left to right: `a || b && c` is `(a || b) && c`); comparisons and
//!    spanset relations (`= != < <= > >= =~ !~ >> << ~ !> !< !>> !<< &>
//!    &< &>> &<< &~`); `+ -`; `!`; `* / %`; `^` (right to left); unary
//!    minus of a number.
//! 2. The tree is read into the typed [`Query`]: what stands where decides
//!    whether `>` is "greater" (inside `{}`), "child" (between spansets) or
//!    a series filter (after a metrics function); types are checked
//!    ([`Type::compares_with`]) and literals folded.
//!
//! Errors carry the 1-based character position, as Tempo's do, and say
//! what is wrong; what Tempo parses but refuses to run is refused with
//! "unsupported".

use super::ast::*;
use super::lex::{LANGUAGE, Symbol, Token, TraceqlError, error, tokenize};
use crate::syntax::Cursor;

/// Longest query accepted, in characters.
pub const MAX_QUERY_CHARS: usize = 8_000;
/// Deepest tree accepted: nesting and chained operators alike, so a
/// hostile query cannot exhaust the stack of the code that walks it.
const MAX_DEPTH: usize = 200;

/// The untyped tree.
#[derive(Debug, Clone)]
enum Node {
    Value(Value),
    Field(Field),
    /// `parent.x`: parsed, refused as Tempo refuses it.
    Parent,
    /// An identifier that is not a keyword.
    Word(String),
    Braces(Option<Box<Spanned>>),
    Paren(Box<Spanned>),
    Call {
        name: String,
        arguments: Vec<Spanned>,
        by: Option<Vec<Spanned>>,
    },
    Binary(Symbol, Box<Spanned>, Box<Spanned>),
    Prefix(Symbol, Box<Spanned>),
    Pipe(Vec<Spanned>),
}

#[derive(Debug, Clone)]
struct Spanned {
    position: usize,
    node: Node,
}

/// Functions, and whether they are metrics functions that take `by()`.
const FUNCTIONS: [(&str, bool); 19] = [
    ("count", false),
    ("avg", false),
    ("min", false),
    ("max", false),
    ("sum", false),
    ("by", false),
    ("coalesce", false),
    ("select", false),
    ("topk", false),
    ("bottomk", false),
    ("compare", false),
    ("rate", true),
    ("count_over_time", true),
    ("min_over_time", true),
    ("max_over_time", true),
    ("sum_over_time", true),
    ("avg_over_time", true),
    ("quantile_over_time", true),
    ("histogram_over_time", true),
];

fn is_function(word: &str) -> bool {
    FUNCTIONS.iter().any(|(name, _)| *name == word)
}

fn takes_by(word: &str) -> bool {
    FUNCTIONS.iter().any(|(name, by)| *name == word && *by)
}

fn is_metrics_function(word: &str) -> bool {
    takes_by(word) || word == "compare"
}

/// Binding power of an infix symbol (higher binds tighter) and whether it
/// associates to the right.
fn infix_power(symbol: Symbol) -> Option<(u8, bool)> {
    use Symbol::*;
    Some(match symbol {
        Pipe => (1, false),
        And | Or => (2, false),
        Eq | Ne | Lt | Le | Gt | Ge | Regex | NotRegex | Descendant | Ancestor | Sibling
        | NotChild | NotParent | NotDescendant | NotAncestor | UnionSibling | UnionChild
        | UnionParent | UnionDescendant | UnionAncestor => (3, false),
        Add | Sub => (4, false),
        Mul | Div | Mod => (6, false),
        Pow => (7, true),
        Not => return None,
    })
}

/// Parses a TraceQL query.
pub fn parse(text: &str) -> Result<Query, TraceqlError> {
    let length = text.chars().count();
    if length > MAX_QUERY_CHARS {
        return Err(error(
            MAX_QUERY_CHARS + 1,
            format!("queries are limited to {MAX_QUERY_CHARS} characters"),
        ));
    }
    let tokens = tokenize(text)?;
    if tokens.is_empty() {
        return Err(error(1, "empty query"));
    }
    let mut parser = Parser {
        cursor: Cursor::new(tokens, length + 1, MAX_DEPTH, LANGUAGE),
    };
    let tree = parser.expression(0, false)?;
    let hints = parser.hints()?;
    if let Some((position, token)) = parser.cursor.peek() {
        return Err(error(position, format!("unexpected {token}")));
    }
    let body = body(tree)?;
    Ok(Query { body, hints })
}

struct Parser {
    cursor: Cursor<Token>,
}

impl Parser {
    fn nested<T>(
        &mut self,
        position: usize,
        parse: impl FnOnce(&mut Self) -> Result<T, TraceqlError>,
    ) -> Result<T, TraceqlError> {
        self.cursor.enter(position)?;
        let parsed = parse(self);
        self.cursor.leave();
        parsed
    }

    /// `with(name = value, ...)` after the query.
    fn hints(&mut self) -> Result<Hints, TraceqlError> {
        let mut hints = Hints::default();
        let Some((_, Token::Word(word))) = self.cursor.peek() else {
            return Ok(hints);
        };
        if word != "with" {
            return Ok(hints);
        }
        self.cursor.advance();
        self.cursor.expect(Token::LeftParen, "\"(\"")?;
        loop {
            let (position, token) = self.cursor.take("a hint name")?;
            let name = match token {
                Token::Word(name) => name,
                other => {
                    return Err(error(
                        position,
                        format!("expected a hint name, found {other}"),
                    ));
                }
            };
            self.cursor.expect(Token::Symbol(Symbol::Eq), "\"=\"")?;
            let (value_position, value) = self.cursor.take("a hint value")?;
            let value = match value {
                Token::Text(text) => Value::Text(text),
                Token::Int(int) => Value::Int(int),
                Token::Float(float) => Value::Float(float),
                Token::Duration(nanos) => Value::Duration(nanos),
                Token::Word(word) if word == "true" => Value::Bool(true),
                Token::Word(word) if word == "false" => Value::Bool(false),
                other => {
                    return Err(error(
                        value_position,
                        format!("expected a hint value, found {other}"),
                    ));
                }
            };
            hints.values.push((name, value));
            match self.cursor.take("\",\" or \")\"")? {
                (_, Token::Comma) => continue,
                (_, Token::RightParen) => return Ok(hints),
                (position, other) => {
                    return Err(error(
                        position,
                        format!("expected \",\" or \")\", found {other}"),
                    ));
                }
            }
        }
    }

    /// Pratt parsing: a prefix form, then infix symbols binding at least
    /// `minimum`. `in_braces`: inside `{ }`, where unary minus binds like
    /// `-` (Tempo's `SUB fieldExpression`) rather than tighter than `^`.
    fn expression(&mut self, minimum: u8, in_braces: bool) -> Result<Spanned, TraceqlError> {
        let mut left = self.prefix(in_braces)?;
        let mut chained = 0;
        let parsed = self.infix(&mut left, minimum, in_braces, &mut chained);
        for _ in 0..chained {
            self.cursor.leave();
        }
        parsed.map(|()| left)
    }

    /// The infix part of [`Parser::expression`]; each operator read deepens
    /// the tree by one (`chained` counts them).
    fn infix(
        &mut self,
        left: &mut Spanned,
        minimum: u8,
        in_braces: bool,
        chained: &mut usize,
    ) -> Result<(), TraceqlError> {
        loop {
            let Some((position, Token::Symbol(symbol))) = self.cursor.peek() else {
                return Ok(());
            };
            let Some((power, right_associative)) = infix_power(symbol) else {
                return Ok(());
            };
            if power < minimum {
                return Ok(());
            }
            self.cursor.advance();
            if symbol != Symbol::Pipe {
                self.cursor.enter(position)?;
                *chained += 1;
            }
            let next_minimum = if right_associative { power } else { power + 1 };
            let right = self.nested(position, |parser| {
                parser.expression(next_minimum, in_braces)
            })?;
            let previous = std::mem::replace(
                left,
                Spanned {
                    position,
                    node: Node::Pipe(Vec::new()),
                },
            );
            *left = if symbol == Symbol::Pipe {
                let mut items = match previous.node {
                    Node::Pipe(items) => items,
                    _ => vec![previous],
                };
                items.push(right);
                Spanned {
                    position: items[0].position,
                    node: Node::Pipe(items),
                }
            } else {
                Spanned {
                    position,
                    node: Node::Binary(symbol, Box::new(previous), Box::new(right)),
                }
            };
        }
    }

    fn prefix(&mut self, in_braces: bool) -> Result<Spanned, TraceqlError> {
        let (position, token) = self.cursor.take("an expression")?;
        let node = match token {
            Token::LeftBrace => {
                if let Some((_, Token::RightBrace)) = self.cursor.peek() {
                    self.cursor.advance();
                    Node::Braces(None)
                } else {
                    let inner = self.nested(position, |parser| parser.expression(0, true))?;
                    self.cursor.expect(Token::RightBrace, "\"}\"")?;
                    Node::Braces(Some(Box::new(inner)))
                }
            }
            Token::LeftParen => {
                let inner = self.nested(position, |parser| parser.expression(0, in_braces))?;
                self.cursor.expect(Token::RightParen, "\")\"")?;
                Node::Paren(Box::new(inner))
            }
            Token::Symbol(Symbol::Sub) => {
                // Tempo: `SUB fieldExpression` binds at the level of `-`
                // inside a filter; a scalar's `SUB scalar %prec UMINUS`
                // binds tightest.
                let power = if in_braces { 5 } else { 9 };
                let operand =
                    self.nested(position, |parser| parser.expression(power, in_braces))?;
                Node::Prefix(Symbol::Sub, Box::new(operand))
            }
            Token::Symbol(Symbol::Not) => {
                let operand = self.nested(position, |parser| parser.expression(6, in_braces))?;
                Node::Prefix(Symbol::Not, Box::new(operand))
            }
            Token::Text(text) => Node::Value(Value::Text(text)),
            Token::Int(int) => Node::Value(Value::Int(int)),
            Token::Float(float) => Node::Value(Value::Float(float)),
            Token::Duration(nanos) => Node::Value(Value::Duration(nanos)),
            Token::Attribute { parent: true, .. } => Node::Parent,
            Token::Attribute { scope, name, .. } => Node::Field(Field::Attribute { scope, name }),
            Token::Intrinsic(intrinsic) => Node::Field(Field::Intrinsic(intrinsic)),
            Token::Word(word) => self.word(position, word)?,
            other => {
                return Err(error(
                    position,
                    format!("expected an expression, found {other}"),
                ));
            }
        };
        Ok(Spanned { position, node })
    }

    fn word(&mut self, position: usize, word: String) -> Result<Node, TraceqlError> {
        let value = match word.as_str() {
            "true" => Some(Value::Bool(true)),
            "false" => Some(Value::Bool(false)),
            "nil" => Some(Value::Nil),
            "ok" | "error" | "unset" => Some(Value::Status(word.clone())),
            "unspecified" | "internal" | "server" | "client" | "producer" | "consumer" => {
                Some(Value::Kind(word.clone()))
            }
            "minInt" => Some(Value::Int(i64::MIN)),
            "maxInt" => Some(Value::Int(i64::MAX)),
            _ => None,
        };
        if let Some(value) = value {
            return Ok(Node::Value(value));
        }
        if word == "parent" {
            return Ok(Node::Parent);
        }
        if !is_function(&word) {
            if let Some((_, Token::LeftParen)) = self.cursor.peek() {
                return Err(error(
                    position,
                    format!(
                        "unknown function {word}(): TraceQL has count avg min max sum by coalesce select, and the metrics functions rate count_over_time min_over_time max_over_time sum_over_time avg_over_time quantile_over_time histogram_over_time compare topk bottomk"
                    ),
                ));
            }
            return Ok(Node::Word(word));
        }
        match self.cursor.peek() {
            Some((_, Token::LeftParen)) => self.cursor.advance(),
            _ => {
                return Err(error(
                    position,
                    format!("{word} is a function: write {word}(...)"),
                ));
            }
        }
        let arguments = self.nested(position, |parser| parser.arguments())?;
        let mut by = None;
        if takes_by(&word)
            && let Some((by_position, Token::Word(next))) = self.cursor.peek()
            && next == "by"
        {
            self.cursor.advance();
            self.cursor.expect(Token::LeftParen, "\"(\" after by")?;
            let fields = self.nested(by_position, |parser| parser.arguments())?;
            if fields.is_empty() {
                return Err(error(by_position, "by() needs at least one field"));
            }
            by = Some(fields);
        }
        Ok(Node::Call {
            name: word,
            arguments,
            by,
        })
    }

    /// Comma-separated expressions up to `)`, the `(` already read.
    fn arguments(&mut self) -> Result<Vec<Spanned>, TraceqlError> {
        let mut arguments = Vec::new();
        if let Some((_, Token::RightParen)) = self.cursor.peek() {
            self.cursor.advance();
            return Ok(arguments);
        }
        loop {
            arguments.push(self.expression(0, true)?);
            match self.cursor.take("\",\" or \")\"")? {
                (_, Token::Comma) => continue,
                (_, Token::RightParen) => return Ok(arguments),
                (position, other) => {
                    return Err(error(
                        position,
                        format!("expected \",\" or \")\", found {other}"),
                    ));
                }
            }
        }
    }
}

// ------------------------------------------------------------ typed tree

fn unwrap_parens(mut spanned: Spanned) -> Spanned {
    while let Node::Paren(inner) = spanned.node {
        spanned = *inner;
    }
    spanned
}

fn comparison(symbol: Symbol) -> Option<Comparison> {
    Some(match symbol {
        Symbol::Eq => Comparison::Eq,
        Symbol::Ne => Comparison::Ne,
        Symbol::Lt => Comparison::Lt,
        Symbol::Le => Comparison::Le,
        Symbol::Gt => Comparison::Gt,
        Symbol::Ge => Comparison::Ge,
        _ => return None,
    })
}

fn math_op(symbol: Symbol) -> Option<MathOp> {
    Some(match symbol {
        Symbol::Add => MathOp::Add,
        Symbol::Sub => MathOp::Sub,
        Symbol::Mul => MathOp::Mul,
        Symbol::Div => MathOp::Div,
        _ => return None,
    })
}

fn spanset_op(symbol: Symbol) -> Option<SpansetOp> {
    Some(match symbol {
        Symbol::And => SpansetOp::And,
        Symbol::Or => SpansetOp::Union,
        Symbol::Gt => SpansetOp::Child,
        Symbol::Lt => SpansetOp::Parent,
        Symbol::Descendant => SpansetOp::Descendant,
        Symbol::Ancestor => SpansetOp::Ancestor,
        Symbol::Sibling => SpansetOp::Sibling,
        Symbol::NotChild => SpansetOp::NotChild,
        Symbol::NotParent => SpansetOp::NotParent,
        Symbol::NotDescendant => SpansetOp::NotDescendant,
        Symbol::NotAncestor => SpansetOp::NotAncestor,
        Symbol::NotRegex => SpansetOp::NotSibling,
        Symbol::UnionChild => SpansetOp::UnionChild,
        Symbol::UnionParent => SpansetOp::UnionParent,
        Symbol::UnionDescendant => SpansetOp::UnionDescendant,
        Symbol::UnionAncestor => SpansetOp::UnionAncestor,
        Symbol::UnionSibling => SpansetOp::UnionSibling,
        _ => return None,
    })
}

/// Whether the tree is (or wraps) a metrics query.
fn is_metrics(spanned: &Spanned) -> bool {
    match &spanned.node {
        Node::Pipe(items) => items.iter().any(|item| match &item.node {
            Node::Call { name, .. } => is_metrics_function(name),
            Node::Binary(symbol, left, _)
                if comparison(*symbol).is_some()
                    && matches!(&left.node, Node::Call { name, .. } if is_metrics_function(name)) =>
            {
                true
            }
            _ => is_metrics(item),
        }),
        Node::Paren(inner) => is_metrics(inner),
        Node::Binary(_, left, right) => is_metrics(left) || is_metrics(right),
        Node::Prefix(_, inner) => is_metrics(inner),
        _ => false,
    }
}

fn body(tree: Spanned) -> Result<Body, TraceqlError> {
    if is_metrics(&tree) {
        return Ok(Body::Metrics(metrics(tree, true)?));
    }
    Ok(Body::Search(pipeline(tree, true)?))
}

// ------------------------------------------------------------ search

/// A pipeline: `Pipe` items, or one item. `root`: the query's own, where
/// `(pipeline | count()) > 1` stands as a scalar pipeline filter.
fn pipeline(tree: Spanned, root: bool) -> Result<Pipeline, TraceqlError> {
    let items = match tree.node {
        Node::Pipe(items) => items,
        _ => vec![tree],
    };
    let mut stages = Vec::new();
    for (index, item) in items.into_iter().enumerate() {
        stages.push(stage(item, index == 0, root)?);
    }
    Ok(Pipeline { stages })
}

fn stage(item: Spanned, first: bool, root: bool) -> Result<Stage, TraceqlError> {
    let position = item.position;
    match item.node {
        Node::Call {
            ref name,
            ref arguments,
            ..
        } => match name.as_str() {
            "by" => {
                let [argument] = arguments.as_slice() else {
                    return Err(error(position, "by() takes one expression"));
                };
                let grouping = field_expr(argument.clone())?;
                if !grouping.reads_span() {
                    return Err(error(position, "by() must read a field of the span"));
                }
                Ok(Stage::By(grouping))
            }
            "coalesce" if first => Err(error(position, "a pipeline cannot start with coalesce()")),
            "coalesce" if arguments.is_empty() => Ok(Stage::Coalesce),
            "coalesce" => Err(error(position, "coalesce() takes no arguments")),
            "select" => {
                if arguments.is_empty() {
                    return Err(error(position, "select() needs at least one field"));
                }
                let fields = arguments
                    .iter()
                    .map(|argument| match &argument.node {
                        Node::Field(field) => Ok(field.clone()),
                        _ => Err(error(
                            argument.position,
                            "select() takes attributes and intrinsics",
                        )),
                    })
                    .collect::<Result<_, _>>()?;
                Ok(Stage::Select(fields))
            }
            "count" | "avg" | "min" | "max" | "sum" => Err(error(
                position,
                format!("{name}() must be compared with a number, as in {name}(...) > 1"),
            )),
            "topk" | "bottomk" => Err(error(
                position,
                format!("{name}() follows a metrics function, as in {{}} | rate() | {name}(5)"),
            )),
            other => Err(error(position, format!("{other}() cannot stand here"))),
        },
        Node::Binary(symbol, left, right)
            if comparison(symbol).is_some() && {
                let (left, right) = (
                    unwrap_parens((*left).clone()),
                    unwrap_parens((*right).clone()),
                );
                has_aggregate(&left) || has_aggregate(&right) || is_scalar_pipeline(&left)
            } =>
        {
            let comparison = comparison(symbol).unwrap_or(Comparison::Eq);
            scalar_stage(position, comparison, *left, *right, root)
        }
        _ => Ok(Stage::Spansets(spansets(item)?)),
    }
}

fn has_aggregate(spanned: &Spanned) -> bool {
    match &spanned.node {
        Node::Call { name, .. } => matches!(name.as_str(), "count" | "avg" | "min" | "max" | "sum"),
        Node::Binary(_, left, right) => has_aggregate(left) || has_aggregate(right),
        Node::Paren(inner) | Node::Prefix(_, inner) => has_aggregate(inner),
        _ => false,
    }
}

/// `(pipeline | count())`.
fn is_scalar_pipeline(spanned: &Spanned) -> bool {
    match &spanned.node {
        Node::Pipe(items) => items.last().is_some_and(has_aggregate),
        _ => false,
    }
}

/// `count() > 1`, `1 < avg(duration)`, `({...} | count()) > 1`.
fn scalar_stage(
    position: usize,
    comparison: Comparison,
    left: Spanned,
    right: Spanned,
    root: bool,
) -> Result<Stage, TraceqlError> {
    let (left, right) = (unwrap_parens(left), unwrap_parens(right));
    let (aggregate_side, literal_side, comparison) =
        if has_aggregate(&left) || is_scalar_pipeline(&left) {
            (left, right, comparison)
        } else {
            (right, left, comparison.flipped())
        };
    if has_aggregate(&literal_side) || is_scalar_pipeline(&literal_side) {
        return Err(error(
            position,
            "unsupported: comparing two aggregates (Tempo does not run these either)",
        ));
    }
    let value = scalar(&literal_side)?;
    let value = match value {
        Value::Int(int) => int as f64,
        Value::Float(float) => float,
        Value::Duration(nanos) => nanos as f64,
        _ => {
            return Err(error(
                literal_side.position,
                "aggregates compare with numbers",
            ));
        }
    };
    if let Node::Pipe(items) = aggregate_side.node {
        if !root {
            return Err(error(
                position,
                "a scalar pipeline filter stands on its own",
            ));
        }
        let mut items = items;
        let last = items.pop().unwrap_or(Spanned {
            position,
            node: Node::Pipe(Vec::new()),
        });
        let filter = scalar_filter(last, comparison, value)?;
        let mut inner = pipeline(
            Spanned {
                position,
                node: Node::Pipe(items),
            },
            false,
        )?;
        inner.stages.push(Stage::Filter(filter));
        return Ok(Stage::Spansets(Spansets::Pipeline(Box::new(inner))));
    }
    Ok(Stage::Filter(scalar_filter(
        aggregate_side,
        comparison,
        value,
    )?))
}

fn scalar_filter(
    spanned: Spanned,
    comparison: Comparison,
    value: f64,
) -> Result<ScalarFilter, TraceqlError> {
    let position = spanned.position;
    let Node::Call {
        name, arguments, ..
    } = spanned.node
    else {
        return Err(error(
            position,
            "unsupported: arithmetic on aggregates (Tempo does not run it either)",
        ));
    };
    let aggregate = match name.as_str() {
        "count" => Aggregate::Count,
        "avg" => Aggregate::Avg,
        "min" => Aggregate::Min,
        "max" => Aggregate::Max,
        "sum" => Aggregate::Sum,
        other => return Err(error(position, format!("{other}() is not an aggregate"))),
    };
    let argument = match (aggregate, arguments.as_slice()) {
        (Aggregate::Count, []) => None,
        (Aggregate::Count, _) => return Err(error(position, "count() takes no arguments")),
        (_, [argument]) => {
            let expr = field_expr(argument.clone())?;
            let value_type = expr_type(&expr, argument.position)?;
            if !value_type.is_numeric() {
                return Err(error(
                    argument.position,
                    format!("{name}() aggregates numbers, not {value_type} values"),
                ));
            }
            if !expr.reads_span() {
                return Err(error(
                    argument.position,
                    format!("{name}() must read a field of the span"),
                ));
            }
            Some(expr)
        }
        _ => return Err(error(position, format!("{name}() takes one expression"))),
    };
    Ok(ScalarFilter {
        aggregate,
        argument,
        comparison,
        value,
    })
}

fn spansets(spanned: Spanned) -> Result<Spansets, TraceqlError> {
    let position = spanned.position;
    match spanned.node {
        Node::Braces(None) => Ok(Spansets::Filter(None)),
        Node::Braces(Some(inner)) => {
            let inner_position = inner.position;
            let expr = field_expr(*inner)?;
            let value_type = expr_type(&expr, inner_position)?;
            if !matches!(value_type, Type::Bool | Type::Attribute) {
                return Err(error(
                    inner_position,
                    format!("a spanset filter must be a boolean expression, not {value_type}"),
                ));
            }
            Ok(Spansets::Filter(Some(expr)))
        }
        Node::Paren(inner) => match inner.node {
            Node::Pipe(_) => Ok(Spansets::Pipeline(Box::new(pipeline(*inner, false)?))),
            _ => spansets(*inner),
        },
        Node::Binary(symbol, left, right) => {
            let op = spanset_op(symbol).ok_or_else(|| {
                error(
                    position,
                    format!(
                        "spansets combine with && || > < >> << ~ and their !/& forms, not {:?}",
                        symbol.text()
                    ),
                )
            })?;
            Ok(Spansets::Op(
                op,
                Box::new(spansets(*left)?),
                Box::new(spansets(*right)?),
            ))
        }
        Node::Value(_) | Node::Field(_) | Node::Word(_) | Node::Parent => Err(error(
            position,
            "expected a spanset: conditions go inside braces, as in { duration > 1s }",
        )),
        _ => Err(error(position, "expected a spanset \"{ ... }\"")),
    }
}

// ------------------------------------------------------------ field expressions

fn field_expr(spanned: Spanned) -> Result<FieldExpr, TraceqlError> {
    let position = spanned.position;
    match spanned.node {
        Node::Value(value) => Ok(FieldExpr::Value(value)),
        Node::Field(field) => Ok(FieldExpr::Field(field)),
        Node::Parent => Err(error(
            position,
            "unsupported: the parent scope (Tempo does not run it either)",
        )),
        Node::Word(word) => Err(error(
            position,
            format!(
                "unknown identifier {word:?}: attributes are written .x, span.x or resource.x, strings in double quotes"
            ),
        )),
        Node::Paren(inner) => field_expr(*inner),
        Node::Prefix(Symbol::Sub, inner) => Ok(FieldExpr::Negate(Box::new(field_expr(*inner)?))),
        Node::Prefix(_, inner) => Ok(FieldExpr::Not(Box::new(field_expr(*inner)?))),
        Node::Binary(symbol, left, right) => {
            let op = binary_op(symbol).ok_or_else(|| {
                error(
                    position,
                    format!("{:?} relates spansets, not values", symbol.text()),
                )
            })?;
            let left_nil = matches!(left.node, Node::Value(Value::Nil));
            let right_nil = matches!(right.node, Node::Value(Value::Nil));
            if matches!(op, BinaryOp::Eq | BinaryOp::Ne) && (left_nil || right_nil) {
                if left_nil && right_nil {
                    return Ok(FieldExpr::Value(Value::Bool(false)));
                }
                let operand = field_expr(if left_nil { *right } else { *left })?;
                return Ok(if op == BinaryOp::Ne {
                    FieldExpr::Exists(Box::new(operand))
                } else {
                    FieldExpr::NotExists(Box::new(operand))
                });
            }
            Ok(FieldExpr::Binary(
                op,
                Box::new(field_expr(*left)?),
                Box::new(field_expr(*right)?),
            ))
        }
        Node::Braces(_) => Err(error(position, "a spanset cannot stand inside a filter")),
        Node::Call { name, .. } => Err(error(
            position,
            format!("{name}() cannot stand inside a filter"),
        )),
        Node::Pipe(_) => Err(error(position, "\"|\" cannot stand inside a filter")),
    }
}

fn binary_op(symbol: Symbol) -> Option<BinaryOp> {
    Some(match symbol {
        Symbol::Add => BinaryOp::Add,
        Symbol::Sub => BinaryOp::Sub,
        Symbol::Mul => BinaryOp::Mul,
        Symbol::Div => BinaryOp::Div,
        Symbol::Mod => BinaryOp::Mod,
        Symbol::Pow => BinaryOp::Pow,
        Symbol::Eq => BinaryOp::Eq,
        Symbol::Ne => BinaryOp::Ne,
        Symbol::Lt => BinaryOp::Lt,
        Symbol::Le => BinaryOp::Le,
        Symbol::Gt => BinaryOp::Gt,
        Symbol::Ge => BinaryOp::Ge,
        Symbol::Regex => BinaryOp::Regex,
        Symbol::NotRegex => BinaryOp::NotRegex,
        Symbol::And => BinaryOp::And,
        Symbol::Or => BinaryOp::Or,
        _ => return None,
    })
}

/// The static type of `expr`, refusing operands of the wrong type as
/// Tempo's validation does.
pub(super) fn expr_type(expr: &FieldExpr, position: usize) -> Result<Type, TraceqlError> {
    let refuse = |message: String| Err(error(position, message));
    match expr {
        FieldExpr::Value(value) => Ok(value.value_type()),
        FieldExpr::Field(Field::Attribute { .. }) => Ok(Type::Attribute),
        FieldExpr::Field(Field::Intrinsic(intrinsic)) => Ok(intrinsic.value_type()),
        FieldExpr::Negate(inner) => {
            let inner_type = expr_type(inner, position)?;
            if !inner_type.is_numeric() {
                return refuse(format!("unary - applies to numbers, not {inner_type}"));
            }
            Ok(inner_type)
        }
        FieldExpr::Not(inner) => {
            let inner_type = expr_type(inner, position)?;
            if !matches!(inner_type, Type::Bool | Type::Attribute) {
                return refuse(format!("! applies to booleans, not {inner_type}"));
            }
            Ok(Type::Bool)
        }
        FieldExpr::Exists(inner) => {
            expr_type(inner, position)?;
            Ok(Type::Bool)
        }
        FieldExpr::NotExists(inner) => {
            let cannot_be_nil = match inner.as_ref() {
                FieldExpr::Field(Field::Intrinsic(intrinsic)) => Some(intrinsic.name().to_string()),
                FieldExpr::Field(Field::Attribute {
                    scope: Scope::Resource,
                    name,
                }) if name == super::SERVICE_NAME => Some("resource.service.name".to_string()),
                _ => None,
            };
            if let Some(name) = cannot_be_nil {
                return refuse(format!("{name} is never nil"));
            }
            expr_type(inner, position)?;
            Ok(Type::Bool)
        }
        FieldExpr::Binary(op, left, right) => {
            let (left_type, right_type) = (expr_type(left, position)?, expr_type(right, position)?);
            let mismatch = || {
                Err(error(
                    position,
                    format!("{} cannot apply to {left_type} and {right_type}", op.text()),
                ))
            };
            match op {
                op if op.is_arithmetic() => {
                    if !left_type.is_numeric() || !right_type.is_numeric() {
                        return mismatch();
                    }
                    Ok(match (left_type, right_type) {
                        (Type::Attribute, other) | (other, Type::Attribute) => other,
                        (Type::Float, _) | (_, Type::Float) => Type::Float,
                        (Type::Duration, _) | (_, Type::Duration) => Type::Duration,
                        _ => Type::Int,
                    })
                }
                BinaryOp::And | BinaryOp::Or => {
                    let boolean = |t: Type| matches!(t, Type::Bool | Type::Attribute);
                    if !boolean(left_type) || !boolean(right_type) {
                        return mismatch();
                    }
                    Ok(Type::Bool)
                }
                BinaryOp::Regex | BinaryOp::NotRegex => {
                    let text = |t: Type| matches!(t, Type::Text | Type::Attribute);
                    if !text(left_type) || !text(right_type) {
                        return mismatch();
                    }
                    Ok(Type::Bool)
                }
                _ => {
                    if !left_type.compares_with(right_type) {
                        return mismatch();
                    }
                    let ordered = !matches!(op, BinaryOp::Eq | BinaryOp::Ne);
                    let unordered =
                        |t: Type| matches!(t, Type::Status | Type::Kind | Type::Bool | Type::Nil);
                    if ordered && (unordered(left_type) || unordered(right_type)) {
                        return mismatch();
                    }
                    Ok(Type::Bool)
                }
            }
        }
    }
}

// ------------------------------------------------------------ scalars

/// A literal number, duration or folded arithmetic of them (`1 + 2`,
/// `-3`, `(2 * 3)`); integer arithmetic stays integer (`1/2` is 0) and
/// durations take no arithmetic, as in Tempo.
fn scalar(spanned: &Spanned) -> Result<Value, TraceqlError> {
    let position = spanned.position;
    match &spanned.node {
        Node::Value(value @ (Value::Int(_) | Value::Float(_) | Value::Duration(_))) => {
            Ok(value.clone())
        }
        Node::Paren(inner) => scalar(inner),
        Node::Prefix(Symbol::Sub, inner) => match scalar(inner)? {
            Value::Int(int) => int
                .checked_neg()
                .map(Value::Int)
                .ok_or_else(|| error(position, "integer overflow")),
            Value::Float(float) => Ok(Value::Float(-float)),
            Value::Duration(nanos) => Ok(Value::Duration(-nanos)),
            _ => Err(error(position, "expected a number")),
        },
        Node::Binary(symbol, left, right) => {
            let op = math_op(*symbol).ok_or_else(|| {
                error(
                    position,
                    format!("{:?} cannot combine numbers here", symbol.text()),
                )
            })?;
            let (left, right) = (scalar(left)?, scalar(right)?);
            match (left, right) {
                (Value::Int(a), Value::Int(b)) => {
                    let folded = match op {
                        MathOp::Add => a.checked_add(b),
                        MathOp::Sub => a.checked_sub(b),
                        MathOp::Mul => a.checked_mul(b),
                        MathOp::Div => a.checked_div(b),
                    };
                    folded
                        .map(Value::Int)
                        .ok_or_else(|| error(position, "integer overflow or division by zero"))
                }
                (Value::Duration(_), _) | (_, Value::Duration(_)) => Err(error(
                    position,
                    "durations take no arithmetic outside a filter",
                )),
                (a, b) => {
                    let number = |value: Value| match value {
                        Value::Int(int) => int as f64,
                        Value::Float(float) => float,
                        _ => f64::NAN,
                    };
                    Ok(Value::Float(op.apply(number(a), number(b))))
                }
            }
        }
        Node::Value(other) => Err(error(
            position,
            format!("expected a number, found {} value", other.value_type()),
        )),
        _ => Err(error(position, "expected a number")),
    }
}

#[cfg(test)]
fn number(spanned: &Spanned) -> Result<f64, TraceqlError> {
    match scalar(spanned)? {
        Value::Int(int) => Ok(int as f64),
        Value::Float(float) => Ok(float),
        Value::Duration(nanos) => Ok(nanos as f64),
        _ => Err(error(spanned.position, "expected a number")),
    }
}

// ------------------------------------------------------------ metrics

/// A metrics expression; `root` allows a bare `pipeline | rate() ...`.
fn metrics(tree: Spanned, root: bool) -> Result<MetricsExpr, TraceqlError> {
    let position = tree.position;
    match tree.node {
        Node::Paren(inner) => {
            if !is_metrics(&inner) {
                return Err(error(position, "expected a metrics query in parentheses"));
            }
            metrics(*inner, true)
        }
        Node::Pipe(items) => {
            if !root {
                return Err(error(
                    position,
                    "a metrics query combined with others needs parentheses",
                ));
            }
            metrics_pipeline(position, items)
        }
        Node::Binary(symbol, left, right) => {
            if let Some(comparison) = comparison(symbol) {
                if !is_metrics(&left) {
                    return Err(error(position, "a series filter follows a metrics query"));
                }
                let threshold = metrics_scalar(&right)?;
                let expr = metrics(*left, false)?;
                return staged(
                    expr,
                    vec![SecondStage::Filter(comparison, threshold)],
                    position,
                );
            }
            let op = math_op(symbol).ok_or_else(|| {
                error(
                    position,
                    format!(
                        "metrics queries combine with + - * /, not {:?}",
                        symbol.text()
                    ),
                )
            })?;
            match (is_metrics(&left), is_metrics(&right)) {
                (true, true) => {
                    let (left, right) = (metrics(*left, false)?, metrics(*right, false)?);
                    if is_compare(&left) || is_compare(&right) {
                        return Err(error(position, "compare() takes no arithmetic"));
                    }
                    Ok(MetricsExpr::Math(op, Box::new(left), Box::new(right)))
                }
                (true, false) => Ok(MetricsExpr::Scalar {
                    op,
                    scalar: math_scalar(&right)?,
                    expr: Box::new(metrics(*left, false)?),
                    scalar_first: false,
                }),
                (false, true) => Ok(MetricsExpr::Scalar {
                    op,
                    scalar: math_scalar(&left)?,
                    expr: Box::new(metrics(*right, false)?),
                    scalar_first: true,
                }),
                (false, false) => Err(error(position, "expected a metrics query")),
            }
        }
        _ => Err(error(position, "expected a metrics query")),
    }
}

fn is_compare(expr: &MetricsExpr) -> bool {
    match expr {
        MetricsExpr::Query(query) => matches!(query.function, MetricsFunction::Compare { .. }),
        MetricsExpr::Staged(inner, _) | MetricsExpr::Scalar { expr: inner, .. } => {
            is_compare(inner)
        }
        MetricsExpr::Math(..) => false,
    }
}

fn staged(
    expr: MetricsExpr,
    stages: Vec<SecondStage>,
    position: usize,
) -> Result<MetricsExpr, TraceqlError> {
    if stages.is_empty() {
        return Ok(expr);
    }
    if is_compare(&expr) {
        return Err(error(
            position,
            "compare() takes no topk, bottomk or series filter",
        ));
    }
    Ok(match expr {
        MetricsExpr::Staged(inner, mut before) => {
            before.extend(stages);
            MetricsExpr::Staged(inner, before)
        }
        other => MetricsExpr::Staged(Box::new(other), stages),
    })
}

/// A number in metrics math: no durations in arithmetic, no overflow.
fn metrics_scalar(spanned: &Spanned) -> Result<f64, TraceqlError> {
    let value = scalar(spanned)?;
    match value {
        Value::Int(int) => Ok(int as f64),
        Value::Float(float) => Ok(float),
        Value::Duration(nanos) => Ok(nanos as f64 / 1e9),
        _ => Err(error(spanned.position, "expected a number")),
    }
}

/// A number metrics are combined with: durations are refused (Tempo's
/// grammar has no duration there).
fn math_scalar(spanned: &Spanned) -> Result<f64, TraceqlError> {
    match scalar(spanned)? {
        Value::Duration(_) => Err(error(
            spanned.position,
            "metrics combine with numbers, not durations",
        )),
        _ => metrics_scalar(spanned),
    }
}

/// `spansets | ... | rate() by (...) > 1 | topk(5)`, or a wrapped
/// metrics expression followed by second stages.
fn metrics_pipeline(position: usize, items: Vec<Spanned>) -> Result<MetricsExpr, TraceqlError> {
    let is_function_item = |item: &Spanned| match &item.node {
        Node::Call { name, .. } => takes_by(name) || name == "compare",
        Node::Binary(symbol, left, _) if comparison(*symbol).is_some() => {
            matches!(&left.node, Node::Call { name, .. } if takes_by(name) || name == "compare")
        }
        _ => false,
    };
    let (expr, rest) = match items.iter().position(is_function_item) {
        Some(0) => {
            return Err(error(
                position,
                "a metrics function follows a spanset, as in {} | rate()",
            ));
        }
        Some(index) => {
            let mut items = items;
            let rest = items.split_off(index + 1);
            let function_item = items
                .pop()
                .ok_or_else(|| error(position, "expected a metrics function"))?;
            let spans = pipeline(
                Spanned {
                    position,
                    node: Node::Pipe(items),
                },
                false,
            )?;
            let (call, filter) = match function_item.node {
                Node::Binary(symbol, left, right) => {
                    let threshold = metrics_scalar(&right)?;
                    (
                        *left,
                        comparison(symbol).map(|c| SecondStage::Filter(c, threshold)),
                    )
                }
                other => (
                    Spanned {
                        position: function_item.position,
                        node: other,
                    },
                    None,
                ),
            };
            let query = metrics_query(spans, call)?;
            let expr = MetricsExpr::Query(Box::new(query));
            (staged(expr, filter.into_iter().collect(), position)?, rest)
        }
        None => {
            let mut items = items.into_iter();
            let first = items
                .next()
                .ok_or_else(|| error(position, "expected a metrics query"))?;
            if !is_metrics(&first) {
                return Err(error(
                    first.position,
                    "a metrics function follows a spanset, as in {} | rate()",
                ));
            }
            (metrics(first, false)?, items.collect())
        }
    };
    let mut stages = Vec::new();
    for item in rest {
        stages.extend(second_stage(item)?);
    }
    staged(expr, stages, position)
}

/// `topk(n)`, `bottomk(n)`, optionally compared (`topk(5) > 10`).
fn second_stage(item: Spanned) -> Result<Vec<SecondStage>, TraceqlError> {
    let position = item.position;
    match item.node {
        Node::Binary(symbol, left, right) if comparison(symbol).is_some() => {
            let mut stages = second_stage(*left)?;
            let threshold = metrics_scalar(&right)?;
            stages.push(SecondStage::Filter(
                comparison(symbol).unwrap_or(Comparison::Eq),
                threshold,
            ));
            Ok(stages)
        }
        Node::Call {
            name, arguments, ..
        } if name == "topk" || name == "bottomk" => {
            let [argument] = arguments.as_slice() else {
                return Err(error(position, format!("{name}() takes one integer")));
            };
            let count = match &argument.node {
                Node::Value(Value::Int(count)) => *count,
                _ => {
                    return Err(error(
                        argument.position,
                        format!("{name}() takes a positive integer"),
                    ));
                }
            };
            if count <= 0 {
                return Err(error(
                    argument.position,
                    format!("{name}() takes a positive integer, not {count}"),
                ));
            }
            let count = usize::try_from(count).unwrap_or(usize::MAX);
            Ok(vec![if name == "topk" {
                SecondStage::TopK(count)
            } else {
                SecondStage::BottomK(count)
            }])
        }
        _ => Err(error(
            position,
            "after a metrics function: | topk(n), | bottomk(n) or a comparison with a number",
        )),
    }
}

fn attribute_argument(
    name: &str,
    argument: Option<&Spanned>,
    position: usize,
) -> Result<Field, TraceqlError> {
    match argument.map(|argument| &argument.node) {
        Some(Node::Field(field)) => Ok(field.clone()),
        Some(Node::Parent) => Err(error(position, "unsupported: the parent scope")),
        _ => Err(error(
            position,
            format!("{name}() takes an attribute or intrinsic, as in {name}(duration)"),
        )),
    }
}

fn metrics_query(spans: Pipeline, call: Spanned) -> Result<MetricsQuery, TraceqlError> {
    let position = call.position;
    let Node::Call {
        name,
        arguments,
        by,
    } = call.node
    else {
        return Err(error(position, "expected a metrics function"));
    };
    let no_arguments = |function: MetricsFunction| {
        if arguments.is_empty() {
            Ok(function)
        } else {
            Err(error(position, format!("{name}() takes no arguments")))
        }
    };
    let one_attribute = || {
        if arguments.len() != 1 {
            return Err(error(position, format!("{name}() takes one attribute")));
        }
        attribute_argument(&name, arguments.first(), position)
    };
    let function = match name.as_str() {
        "rate" => no_arguments(MetricsFunction::Rate)?,
        "count_over_time" => no_arguments(MetricsFunction::CountOverTime)?,
        "min_over_time" => MetricsFunction::MinOverTime(one_attribute()?),
        "max_over_time" => MetricsFunction::MaxOverTime(one_attribute()?),
        "sum_over_time" => MetricsFunction::SumOverTime(one_attribute()?),
        "avg_over_time" => MetricsFunction::AvgOverTime(one_attribute()?),
        "histogram_over_time" => MetricsFunction::HistogramOverTime(one_attribute()?),
        "quantile_over_time" => {
            if arguments.len() < 2 {
                return Err(error(
                    position,
                    "quantile_over_time() takes an attribute and quantiles, as in quantile_over_time(duration, .5, .99)",
                ));
            }
            let field = attribute_argument(&name, arguments.first(), position)?;
            let mut quantiles = Vec::new();
            for argument in &arguments[1..] {
                let quantile = match argument.node {
                    Node::Value(Value::Int(int)) => int as f64,
                    Node::Value(Value::Float(float)) => float,
                    _ => return Err(error(argument.position, "quantiles are numbers")),
                };
                quantiles.push(quantile);
            }
            MetricsFunction::QuantileOverTime(field, quantiles)
        }
        "compare" => {
            let Some(first) = arguments.first() else {
                return Err(error(
                    position,
                    "compare() takes a spanset filter, as in compare({status=error})",
                ));
            };
            let selection = match spansets(first.clone())? {
                Spansets::Filter(selection) => selection,
                _ => return Err(error(first.position, "compare() takes one spanset filter")),
            };
            let integers = arguments[1..]
                .iter()
                .map(|argument| match argument.node {
                    Node::Value(Value::Int(int)) => Ok(int),
                    _ => Err(error(
                        argument.position,
                        "compare() takes integers after the filter",
                    )),
                })
                .collect::<Result<Vec<i64>, _>>()?;
            let (top, start, end) = match integers.as_slice() {
                [] => (10, 0, 0),
                [top] => (*top, 0, 0),
                [top, start, end] => (*top, *start, *end),
                _ => {
                    return Err(error(
                        position,
                        "compare() takes a filter, then topN, or topN, start and end",
                    ));
                }
            };
            if by.is_some() {
                return Err(error(position, "compare() takes no by()"));
            }
            MetricsFunction::Compare {
                selection,
                top: usize::try_from(top.max(0)).unwrap_or(0),
                start_ns: start,
                end_ns: end,
            }
        }
        other => {
            return Err(error(
                position,
                format!("{other}() is not a metrics function"),
            ));
        }
    };
    let by = match by {
        None => Vec::new(),
        Some(fields) => fields
            .iter()
            .map(|field| attribute_argument("by", Some(field), field.position))
            .collect::<Result<_, _>>()?,
    };
    Ok(MetricsQuery {
        pipeline: spans,
        function,
        by,
    })
}

/// `number` for callers outside the module (tests).
#[cfg(test)]
fn folded(text: &str) -> Result<f64, TraceqlError> {
    let tokens = tokenize(text)?;
    let length = text.chars().count();
    let mut parser = Parser {
        cursor: Cursor::new(tokens, length + 1, MAX_DEPTH, LANGUAGE),
    };
    number(&parser.expression(0, false)?)
}

#[cfg(test)]
#[path = "parse_tests.rs"]
mod tests;
