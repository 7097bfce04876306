/// Expressions of the Jinja subset.
indirect enum JinjaExpr {
    case literal(JinjaValue)
    case name(String)
    case list([JinjaExpr])
    case dict([(JinjaExpr, JinjaExpr)])
    case attribute(JinjaExpr, String)
    case item(JinjaExpr, JinjaExpr)
    case slice(JinjaExpr, JinjaExpr?, JinjaExpr?, JinjaExpr?)
    case call(JinjaExpr, [JinjaExpr], [(String, JinjaExpr)])
    case filter(JinjaExpr, String, [JinjaExpr], [(String, JinjaExpr)])
    case test(JinjaExpr, String, [JinjaExpr], negated: Bool)
    case unary(String, JinjaExpr)
    case binary(String, JinjaExpr, JinjaExpr)
    case and(JinjaExpr, JinjaExpr)
    case or(JinjaExpr, JinjaExpr)
    case not(JinjaExpr)
    case conditional(JinjaExpr, condition: JinjaExpr, otherwise: JinjaExpr?)
}

/// Statements of the Jinja subset: text, `{{ }}`, `if`/`elif`/`else`, `for` (with `else` and a
/// filter), `set` (names and namespace attributes), `break`, `continue`.
indirect enum JinjaNode {
    case text(String)
    case output(JinjaExpr)
    case conditional([(JinjaExpr, [JinjaNode])], otherwise: [JinjaNode])
    case loop(targets: [String], iterable: JinjaExpr, filter: JinjaExpr?, body: [JinjaNode], otherwise: [JinjaNode])
    case assign(name: String, attribute: String?, JinjaExpr)
    case breakLoop, continueLoop
}

/// Builds the node tree from the lexer's segments.
struct JinjaParser {
    private let segments: [JinjaSegment]
    private var position = 0

    static func parse(_ source: String) throws -> [JinjaNode] {
        var parser = JinjaParser(segments: try JinjaLexer.segments(source))
        let (nodes, end) = try parser.body(until: [])
        if let end { throw TemplateError("unexpected {% \(end) %}") }
        return nodes
    }

    private init(segments: [JinjaSegment]) { self.segments = segments }

    /// Nodes up to one of the `until` keywords; returns the keyword (nil at the end of input),
    /// leaving the statement's tokens to the caller through `pendingStatement`.
    private var pendingStatement: (tokens: [JinjaToken], line: Int)?

    private mutating func body(until ends: Set<String>) throws -> ([JinjaNode], String?) {
        var nodes: [JinjaNode] = []
        while position < segments.count {
            let segment = segments[position]
            position += 1
            switch segment {
            case .text(let t):
                nodes.append(.text(t))
            case .output(let tokens, let line):
                var e = ExpressionParser(tokens: tokens, line: line)
                nodes.append(.output(try e.parseAll()))
            case .statement(let tokens, let line):
                guard case .name(let keyword) = tokens.first else { throw TemplateError("empty statement", line: line) }
                if ends.contains(keyword) {
                    pendingStatement = (tokens, line)
                    return (nodes, keyword)
                }
                nodes.append(try statement(keyword, tokens, line))
            }
        }
        if !ends.isEmpty { throw TemplateError("missing {% \(ends.sorted().joined(separator: " / ")) %} at the end of the template") }
        return (nodes, nil)
    }

    private mutating func statement(_ keyword: String, _ tokens: [JinjaToken], _ line: Int) throws -> JinjaNode {
        var e = ExpressionParser(tokens: Array(tokens.dropFirst()), line: line)
        switch keyword {
        case "if":
            var branches: [(JinjaExpr, [JinjaNode])] = []
            var condition = try e.parseAll()
            while true {
                let (nodes, end) = try body(until: ["elif", "else", "endif"])
                branches.append((condition, nodes))
                let pending = pendingStatement!
                switch end {
                case "elif":
                    var c = ExpressionParser(tokens: Array(pending.tokens.dropFirst()), line: pending.line)
                    condition = try c.parseAll()
                case "else":
                    let (elseNodes, _) = try body(until: ["endif"])
                    return .conditional(branches, otherwise: elseNodes)
                default:
                    return .conditional(branches, otherwise: [])
                }
            }
        case "for":
            var targets = [try e.name()]
            while e.accept(.op(",")) { targets.append(try e.name()) }
            try e.expect(.name("in"))
            let iterable = try e.parseConditional(allowIf: false)
            var filter: JinjaExpr?
            if e.accept(.name("if")) { filter = try e.parseOr() }
            if e.accept(.name("recursive")) { throw TemplateError("recursive loops are not supported", line: line) }
            try e.end()
            let (nodes, end) = try body(until: ["else", "endfor"])
            var otherwise: [JinjaNode] = []
            if end == "else" { (otherwise, _) = try body(until: ["endfor"]) }
            return .loop(targets: targets, iterable: iterable, filter: filter, body: nodes, otherwise: otherwise)
        case "set":
            let name = try e.name()
            var attribute: String?
            if e.accept(.op(".")) { attribute = try e.name() }
            guard e.accept(.op("=")) else {
                throw TemplateError("block {% set %} and multiple targets are not supported", line: line)
            }
            return .assign(name: name, attribute: attribute, try e.parseAll())
        case "break": return .breakLoop
        case "continue": return .continueLoop
        default:
            throw TemplateError("the {% \(keyword) %} tag is not supported by Loom's template renderer", line: line)
        }
    }
}
