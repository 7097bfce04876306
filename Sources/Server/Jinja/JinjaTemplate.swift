import LoomCore
import Foundation

/// A parsed template of the Jinja subset that chat templates use, rendered as Hugging Face's
/// `apply_chat_template` renders (`trim_blocks`, `lstrip_blocks`, loop controls, undefined values
/// render as "").
///
/// Supported: `{{ }}`, `{% if/elif/else %}`, `{% for a[, b] in x [if c] %}` with `loop.*` and
/// `{% else %}`, `{% set x = ... %}` and `{% set ns.x = ... %}`, `break`/`continue`, comments,
/// whitespace control; literals, lists, dicts, attribute and item access, slices, arithmetic,
/// `~`, comparisons, `in`, `and/or/not`, conditional expressions; the filters, tests, methods and
/// globals in `JinjaTemplate+Builtins.swift`. Not supported (a `TemplateError` names them): macros,
/// blocks and inheritance, `{% raw %}`, `{% filter %}`, block `set`.
public struct JinjaTemplate: @unchecked Sendable {
    let nodes: [JinjaNode]

    public init(_ source: String) throws {
        nodes = try JinjaParser.parse(source)
    }

    /// Renders with `context` as the global variables.
    public func render(_ context: [String: JSON]) throws -> String {
        var r = JinjaRenderer()
        r.scopes = [context.mapValues(JinjaValue.init)]
        try r.run(nodes)
        return r.output
    }
}

/// How a loop body ended early.
private enum LoopControl: Error {
    case breakLoop, continueLoop
}

struct JinjaRenderer {
    var scopes: [[String: JinjaValue]] = []
    var output = ""

    mutating func run(_ nodes: [JinjaNode]) throws {
        for node in nodes {
            switch node {
            case .text(let t):
                output += t
            case .output(let e):
                output += try eval(e).text
            case .conditional(let branches, let otherwise):
                var taken = false
                for (condition, body) in branches where try eval(condition).isTruthy {
                    try run(body)
                    taken = true
                    break
                }
                if !taken { try run(otherwise) }
            case .loop(let targets, let iterable, let filter, let body, let otherwise):
                try runLoop(targets: targets, iterable: iterable, filter: filter, body: body, otherwise: otherwise)
            case .assign(let name, let attribute, let e):
                let value = try eval(e)
                if let attribute {
                    guard case .namespace(let ns) = lookup(name) else {
                        throw TemplateError("cannot assign attribute '\(attribute)' on '\(name)': only namespace() objects can be changed")
                    }
                    ns.dict[.string(attribute)] = value
                } else {
                    scopes[scopes.count - 1][name] = value
                }
            case .breakLoop: throw LoopControl.breakLoop
            case .continueLoop: throw LoopControl.continueLoop
            }
        }
    }

    private mutating func runLoop(targets: [String], iterable: JinjaExpr, filter: JinjaExpr?, body: [JinjaNode], otherwise: [JinjaNode]) throws {
        var items = try Self.iterate(try eval(iterable))
        if let filter {
            var kept: [JinjaValue] = []
            for item in items {
                scopes.append(try Self.bind(targets, item))
                defer { scopes.removeLast() }
                if try eval(filter).isTruthy { kept.append(item) }
            }
            items = kept
        }
        if items.isEmpty {
            try run(otherwise)
            return
        }
        for (n, item) in items.enumerated() {
            var scope = try Self.bind(targets, item)
            scope["loop"] = .dict(JinjaDict([
                (.string("index"), .int(n + 1)), (.string("index0"), .int(n)),
                (.string("revindex"), .int(items.count - n)), (.string("revindex0"), .int(items.count - n - 1)),
                (.string("first"), .bool(n == 0)), (.string("last"), .bool(n == items.count - 1)),
                (.string("length"), .int(items.count)),
                (.string("previtem"), n > 0 ? items[n - 1] : .undefined),
                (.string("nextitem"), n + 1 < items.count ? items[n + 1] : .undefined),
            ]))
            scopes.append(scope)
            defer { scopes.removeLast() }
            do {
                try run(body)
            } catch LoopControl.continueLoop {
                continue
            } catch LoopControl.breakLoop {
                break
            }
        }
    }

    static func iterate(_ value: JinjaValue) throws -> [JinjaValue] {
        switch value {
        case .list(let l): return l
        case .dict(let d): return d.pairs.map(\.0)
        case .string(let s): return s.map { .string(String($0)) }
        case .undefined, .none: return []
        default: throw TemplateError("'\(value.typeName)' object is not iterable")
        }
    }

    private static func bind(_ targets: [String], _ item: JinjaValue) throws -> [String: JinjaValue] {
        if targets.count == 1 { return [targets[0]: item] }
        guard case .list(let parts) = item, parts.count == targets.count else {
            throw TemplateError("cannot unpack \(item.repr) into \(targets.count) loop variables")
        }
        return Dictionary(uniqueKeysWithValues: zip(targets, parts))
    }

    func lookup(_ name: String) -> JinjaValue {
        for scope in scopes.reversed() {
            if let v = scope[name] { return v }
        }
        return Self.globals.contains(name) ? .function(name) : .undefined
    }

    mutating func eval(_ e: JinjaExpr) throws -> JinjaValue {
        switch e {
        case .literal(let v): return v
        case .name(let n): return lookup(n)
        case .list(let items): return .list(try items.map { try eval($0) })
        case .dict(let pairs): return .dict(JinjaDict(try pairs.map { (try eval($0.0), try eval($0.1)) }))
        case .attribute(let base, let name): return try Self.attribute(try eval(base), name)
        case .item(let base, let index): return try Self.item(try eval(base), try eval(index))
        case .slice(let base, let a, let b, let c):
            return try Self.slice(try eval(base), try a.map { try eval($0) }, try b.map { try eval($0) }, try c.map { try eval($0) })
        case .call(let callee, let args, let kwargs):
            let f = try eval(callee)
            return try call(f, try args.map { try eval($0) }, try kwargs.map { ($0.0, try eval($0.1)) })
        case .filter(let base, let name, let args, let kwargs):
            return try applyFilter(name, try eval(base), try args.map { try eval($0) }, try kwargs.map { ($0.0, try eval($0.1)) })
        case .test(let base, let name, let args, let negated):
            let result = try Self.applyTest(name, try eval(base), try args.map { try eval($0) })
            return .bool(result != negated)
        case .unary(_, let x):
            let v = try eval(x)
            switch v {
            case .int(let i): return .int(-i)
            case .double(let d): return .double(-d)
            default: throw TemplateError("bad operand type for unary -: '\(v.typeName)'")
            }
        case .binary(let op, let a, let b): return try Self.binary(op, try eval(a), try eval(b))
        case .and(let a, let b):
            let x = try eval(a)
            return x.isTruthy ? try eval(b) : x
        case .or(let a, let b):
            let x = try eval(a)
            return x.isTruthy ? x : try eval(b)
        case .not(let x): return .bool(!(try eval(x)).isTruthy)
        case .conditional(let value, let condition, let otherwise):
            if try eval(condition).isTruthy { return try eval(value) }
            return try otherwise.map { try eval($0) } ?? .undefined
        }
    }
}
