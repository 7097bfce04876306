import Foundation

/// Attribute and item access, slices and operators, with Python's semantics.
extension JinjaRenderer {
    static func attribute(_ base: JinjaValue, _ name: String) throws -> JinjaValue {
        switch base {
        case .dict(let d):
            if let v = d[name] { return v }
            return methodNames(of: base).contains(name) ? .method(base, name) : .undefined
        case .namespace(let ns): return ns.dict[name] ?? .undefined
        case .undefined, .none: return .undefined
        default: return methodNames(of: base).contains(name) ? .method(base, name) : .undefined
        }
    }

    static func item(_ base: JinjaValue, _ index: JinjaValue) throws -> JinjaValue {
        switch (base, index) {
        case (.dict(let d), _): return d[index] ?? .undefined
        case (.namespace(let ns), _): return ns.dict[index] ?? .undefined
        case (.list(let l), .int(let i)):
            let k = i < 0 ? l.count + i : i
            guard k >= 0, k < l.count else { return .undefined }
            return l[k]
        case (.string(let s), .int(let i)):
            let chars = Array(s)
            let k = i < 0 ? chars.count + i : i
            guard k >= 0, k < chars.count else { return .undefined }
            return .string(String(chars[k]))
        case (.undefined, _), (.none, _): return .undefined
        case (_, .string(let name)): return try attribute(base, name)
        default: throw TemplateError("'\(base.typeName)' object is not subscriptable by \(index.typeName)")
        }
    }

    static func slice(_ base: JinjaValue, _ a: JinjaValue?, _ b: JinjaValue?, _ c: JinjaValue?) throws -> JinjaValue {
        func indices(_ count: Int) throws -> [Int] {
            let step = c.flatMap { if case .int(let s) = $0 { s } else { nil } } ?? 1
            guard step != 0 else { throw TemplateError("slice step cannot be zero") }
            func bound(_ v: JinjaValue?, _ dflt: Int) -> Int {
                guard case .int(var x)? = v else { return dflt }
                if x < 0 { x += count }
                return step > 0 ? min(max(x, 0), count) : min(max(x, -1), count - 1)
            }
            let start = bound(a, step > 0 ? 0 : count - 1)
            let stop = bound(b, step > 0 ? count : -1)
            return Array(stride(from: start, to: stop, by: step))
        }
        switch base {
        case .list(let l): return .list(try indices(l.count).map { l[$0] })
        case .string(let s):
            let chars = Array(s)
            return .string(String(try indices(chars.count).map { chars[$0] }))
        case .undefined, .none: return .undefined
        default: throw TemplateError("'\(base.typeName)' object cannot be sliced")
        }
    }

    static func binary(_ op: String, _ a: JinjaValue, _ b: JinjaValue) throws -> JinjaValue {
        switch op {
        case "~": return .string(a.text + b.text)
        case "==": return .bool(a.equals(b))
        case "!=": return .bool(!a.equals(b))
        case "in":
            switch b {
            case .string(let s): return .bool(s.contains(a.text) || a.text.isEmpty)
            case .list(let l): return .bool(l.contains { $0.equals(a) })
            case .dict(let d): return .bool(d[a] != nil)
            case .namespace(let ns): return .bool(ns.dict[a] != nil)
            case .undefined, .none: return .bool(false)
            default: throw TemplateError("argument of type '\(b.typeName)' is not iterable")
            }
        case "<", ">", "<=", ">=":
            let order: Int
            if case .string(let x) = a, case .string(let y) = b {
                order = x < y ? -1 : x == y ? 0 : 1
            } else if let x = a.numeric, let y = b.numeric {
                order = x < y ? -1 : x == y ? 0 : 1
            } else {
                throw TemplateError("'\(op)' not supported between '\(a.typeName)' and '\(b.typeName)'")
            }
            switch op {
            case "<": return .bool(order < 0)
            case ">": return .bool(order > 0)
            case "<=": return .bool(order <= 0)
            default: return .bool(order >= 0)
            }
        case "+":
            switch (a, b) {
            case (.string(let x), .string(let y)): return .string(x + y)
            case (.list(let x), .list(let y)): return .list(x + y)
            default: break
            }
        default: break
        }
        return try arithmetic(op, a, b)
    }

    private static func arithmetic(_ op: String, _ a: JinjaValue, _ b: JinjaValue) throws -> JinjaValue {
        if op == "*" {
            if case .string(let s) = a, case .int(let n) = b { return .string(String(repeating: s, count: max(n, 0))) }
            if case .list(let l) = a, case .int(let n) = b { return .list(Array(repeating: l, count: max(n, 0)).flatMap { $0 }) }
        }
        let bothInts: (Int, Int)? = {
            switch (a, b) {
            case (.int(let x), .int(let y)): (x, y)
            case (.bool(let x), .int(let y)): (x ? 1 : 0, y)
            case (.int(let x), .bool(let y)): (x, y ? 1 : 0)
            default: nil
            }
        }()
        guard let x = a.numeric, let y = b.numeric else {
            throw TemplateError("unsupported operand types for \(op): '\(a.typeName)' and '\(b.typeName)'")
        }
        if (op == "/" || op == "//" || op == "%") && y == 0 { throw TemplateError("division by zero") }
        if let (i, j) = bothInts {
            switch op {
            case "+": return .int(i &+ j)
            case "-": return .int(i &- j)
            case "*": return .int(i &* j)
            case "//": return .int(Int((Double(i) / Double(j)).rounded(.down)))
            case "%": return .int(((i % j) + j) % j)
            case "**" where j >= 0: return .int(Int(pow(Double(i), Double(j))))
            default: break
            }
        }
        switch op {
        case "+": return .double(x + y)
        case "-": return .double(x - y)
        case "*": return .double(x * y)
        case "/": return .double(x / y)
        case "//": return .double((x / y).rounded(.down))
        case "%": return .double(x - y * (x / y).rounded(.down))
        case "**": return .double(pow(x, y))
        default: throw TemplateError("unknown operator \(op)")
        }
    }
}
