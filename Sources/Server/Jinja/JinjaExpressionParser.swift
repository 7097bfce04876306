/// Recursive descent over one tag's tokens, with Jinja's precedence: conditional, `or`, `and`,
/// `not`, comparisons and `in`, `+ -`, `~`, `* / // %`, `**`, unary, then postfix, filters, tests.
struct ExpressionParser {
    let tokens: [JinjaToken]
    let line: Int
    var i = 0

    init(tokens: [JinjaToken], line: Int) {
        self.tokens = tokens
        self.line = line
    }

    var peek: JinjaToken? { i < tokens.count ? tokens[i] : nil }

    func fail(_ message: String) -> TemplateError { TemplateError(message, line: line) }

    mutating func accept(_ t: JinjaToken) -> Bool {
        if peek == t { i += 1; return true }
        return false
    }

    mutating func expect(_ t: JinjaToken) throws {
        guard accept(t) else { throw fail("expected \(Self.show(t)), found \(peek.map(Self.show) ?? "the end of the tag")") }
    }

    mutating func name() throws -> String {
        guard case .name(let n) = peek else { throw fail("expected a name, found \(peek.map(Self.show) ?? "the end of the tag")") }
        i += 1
        return n
    }

    mutating func end() throws {
        if let t = peek { throw fail("unexpected \(Self.show(t))") }
    }

    static func show(_ t: JinjaToken) -> String {
        switch t {
        case .name(let n): "'\(n)'"
        case .string(let s): "the string '\(s)'"
        case .int(let v): "\(v)"
        case .float(let v): "\(v)"
        case .op(let o): "'\(o)'"
        }
    }

    mutating func parseAll() throws -> JinjaExpr {
        let e = try parseConditional(allowIf: true)
        try end()
        return e
    }

    mutating func parseConditional(allowIf: Bool) throws -> JinjaExpr {
        let value = try parseOr()
        guard allowIf, accept(.name("if")) else { return value }
        let condition = try parseOr()
        let otherwise = accept(.name("else")) ? try parseConditional(allowIf: true) : nil
        return .conditional(value, condition: condition, otherwise: otherwise)
    }

    mutating func parseOr() throws -> JinjaExpr {
        var e = try parseAnd()
        while accept(.name("or")) { e = .or(e, try parseAnd()) }
        return e
    }

    mutating func parseAnd() throws -> JinjaExpr {
        var e = try parseNot()
        while accept(.name("and")) { e = .and(e, try parseNot()) }
        return e
    }

    mutating func parseNot() throws -> JinjaExpr {
        if accept(.name("not")) { return .not(try parseNot()) }
        return try parseCompare()
    }

    mutating func parseCompare() throws -> JinjaExpr {
        var e = try parseMath1()
        while true {
            if case .op(let o) = peek, ["==", "!=", "<", ">", "<=", ">="].contains(o) {
                i += 1
                e = .binary(o, e, try parseMath1())
            } else if accept(.name("in")) {
                e = .binary("in", e, try parseMath1())
            } else if peek == .name("not"), i + 1 < tokens.count, tokens[i + 1] == .name("in") {
                i += 2
                e = .not(.binary("in", e, try parseMath1()))
            } else {
                return e
            }
        }
    }

    mutating func parseMath1() throws -> JinjaExpr {
        var e = try parseConcat()
        while case .op(let o) = peek, o == "+" || o == "-" {
            i += 1
            e = .binary(o, e, try parseConcat())
        }
        return e
    }

    mutating func parseConcat() throws -> JinjaExpr {
        var e = try parseMath2()
        while accept(.op("~")) { e = .binary("~", e, try parseMath2()) }
        return e
    }

    mutating func parseMath2() throws -> JinjaExpr {
        var e = try parsePow()
        while case .op(let o) = peek, ["*", "/", "//", "%"].contains(o) {
            i += 1
            e = .binary(o, e, try parsePow())
        }
        return e
    }

    mutating func parsePow() throws -> JinjaExpr {
        var e = try parseUnary()
        while accept(.op("**")) { e = .binary("**", e, try parseUnary()) }
        return e
    }

    mutating func parseUnary() throws -> JinjaExpr {
        if accept(.op("-")) { return try parseFilters(.unary("-", try parseUnary())) }
        if accept(.op("+")) { return try parseUnary() }
        return try parseFilters(try parsePostfix(try parsePrimary()))
    }

    mutating func parsePrimary() throws -> JinjaExpr {
        guard let t = peek else { throw fail("expected an expression, found the end of the tag") }
        i += 1
        switch t {
        case .string(var s):
            while case .string(let more) = peek { s += more; i += 1 }
            return .literal(.string(s))
        case .int(let v): return .literal(.int(v))
        case .float(let v): return .literal(.double(v))
        case .name(let n):
            switch n {
            case "true", "True": return .literal(.bool(true))
            case "false", "False": return .literal(.bool(false))
            case "none", "None": return .literal(.none)
            default: return .name(n)
            }
        case .op("("):
            let e = try parseConditional(allowIf: true)
            if accept(.op(",")) {
                var items = [e]
                while !accept(.op(")")) {
                    items.append(try parseConditional(allowIf: true))
                    if !accept(.op(",")) { try expect(.op(")")); break }
                }
                return .list(items)
            }
            try expect(.op(")"))
            return e
        case .op("["):
            var items: [JinjaExpr] = []
            while !accept(.op("]")) {
                items.append(try parseConditional(allowIf: true))
                if !accept(.op(",")) { try expect(.op("]")); break }
            }
            return .list(items)
        case .op("{"):
            var pairs: [(JinjaExpr, JinjaExpr)] = []
            while !accept(.op("}")) {
                let k = try parseConditional(allowIf: true)
                try expect(.op(":"))
                pairs.append((k, try parseConditional(allowIf: true)))
                if !accept(.op(",")) { try expect(.op("}")); break }
            }
            return .dict(pairs)
        default:
            throw fail("unexpected \(Self.show(t))")
        }
    }

    mutating func parsePostfix(_ base: JinjaExpr) throws -> JinjaExpr {
        var e = base
        while true {
            if accept(.op(".")) {
                if case .int(let n) = peek { i += 1; e = .item(e, .literal(.int(n))); continue }
                e = .attribute(e, try name())
            } else if accept(.op("[")) {
                e = try parseSubscript(e)
            } else if peek == .op("(") {
                i += 1
                let (args, kwargs) = try parseArguments()
                e = .call(e, args, kwargs)
            } else {
                return e
            }
        }
    }

    mutating func parseSubscript(_ base: JinjaExpr) throws -> JinjaExpr {
        var parts: [JinjaExpr?] = [nil]
        var isSlice = false
        while !accept(.op("]")) {
            if accept(.op(":")) {
                isSlice = true
                parts.append(nil)
                continue
            }
            parts[parts.count - 1] = try parseConditional(allowIf: true)
        }
        if !isSlice {
            guard let index = parts[0] else { throw fail("empty subscript") }
            return .item(base, index)
        }
        while parts.count < 3 { parts.append(nil) }
        return .slice(base, parts[0], parts[1], parts[2])
    }

    /// After `(`: positional and `name=value` arguments up to `)`.
    mutating func parseArguments() throws -> ([JinjaExpr], [(String, JinjaExpr)]) {
        var args: [JinjaExpr] = []
        var kwargs: [(String, JinjaExpr)] = []
        while !accept(.op(")")) {
            if case .name(let n) = peek, i + 1 < tokens.count, tokens[i + 1] == .op("=") {
                i += 2
                kwargs.append((n, try parseConditional(allowIf: true)))
            } else {
                args.append(try parseConditional(allowIf: true))
            }
            if !accept(.op(",")) { try expect(.op(")")); break }
        }
        return (args, kwargs)
    }

    mutating func parseFilters(_ base: JinjaExpr) throws -> JinjaExpr {
        var e = base
        while true {
            if accept(.op("|")) {
                let filterName = try name()
                var args: [JinjaExpr] = []
                var kwargs: [(String, JinjaExpr)] = []
                if accept(.op("(")) { (args, kwargs) = try parseArguments() }
                e = .filter(e, filterName, args, kwargs)
            } else if accept(.name("is")) {
                let negated = accept(.name("not"))
                let testName = try name()
                var args: [JinjaExpr] = []
                if accept(.op("(")) {
                    (args, _) = try parseArguments()
                } else if let t = peek, Self.startsArgument(t) {
                    args = [try parsePostfix(try parsePrimary())]
                }
                e = .test(e, testName, args, negated: negated)
            } else {
                return e
            }
        }
    }

    /// A test's single argument without parentheses (`x is sameas false`, `n is divisibleby 3`).
    static func startsArgument(_ t: JinjaToken) -> Bool {
        switch t {
        case .string, .int, .float: true
        case .name(let n): !["and", "or", "if", "else", "in", "not", "is"].contains(n)
        case .op(let o): o == "(" || o == "["
        }
    }
}
