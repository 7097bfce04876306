import LoomCore
import Foundation

/// A value while rendering a template, with Python's semantics where templates rely on them
/// (truthiness, `==`, `str()`, `repr()`).
indirect enum JinjaValue {
    case undefined
    case none
    case bool(Bool)
    case int(Int)
    case double(Double)
    case string(String)
    case list([JinjaValue])
    case dict(JinjaDict)
    /// `namespace(...)`: the one mutable object, so `{% set ns.x = ... %}` works inside loops.
    case namespace(JinjaNamespace)
    case function(String)
    /// A bound string, list or dict method (`content.strip`, `message.items`).
    case method(JinjaValue, String)

    init(_ json: JSON) {
        switch json {
        case .null: self = .none
        case .bool(let b): self = .bool(b)
        case .int(let i): self = .int(i)
        case .double(let d): self = .double(d)
        case .string(let s): self = .string(s)
        case .array(let a): self = .list(a.map(JinjaValue.init))
        case .object(let o): self = .dict(JinjaDict(o.pairs.map { (JinjaValue.string($0.key), JinjaValue($0.value)) }))
        }
    }

    var isTruthy: Bool {
        switch self {
        case .undefined, .none: false
        case .bool(let b): b
        case .int(let i): i != 0
        case .double(let d): d != 0
        case .string(let s): !s.isEmpty
        case .list(let l): !l.isEmpty
        case .dict(let d): !d.pairs.isEmpty
        case .namespace, .function, .method: true
        }
    }

    var isDefined: Bool { if case .undefined = self { false } else { true } }

    /// Python's `str()`.
    var text: String {
        switch self {
        case .undefined: ""
        case .none: "None"
        case .bool(let b): b ? "True" : "False"
        case .int(let i): String(i)
        case .double(let d): Self.pythonFloat(d)
        case .string(let s): s
        case .list, .dict, .namespace, .function, .method: repr
        }
    }

    /// Python's `repr()`.
    var repr: String {
        switch self {
        case .string(let s): "'" + s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "'", with: "\\'").replacingOccurrences(of: "\n", with: "\\n") + "'"
        case .list(let l): "[" + l.map(\.repr).joined(separator: ", ") + "]"
        case .dict(let d): "{" + d.pairs.map { "\($0.0.repr): \($0.1.repr)" }.joined(separator: ", ") + "}"
        case .namespace(let n): "<Namespace \(JinjaValue.dict(n.dict).repr)>"
        case .function(let name): "<function \(name)>"
        case .method(_, let name): "<method \(name)>"
        default: text
        }
    }

    static func pythonFloat(_ d: Double) -> String {
        if d.isNaN { return "nan" }
        if d.isInfinite { return d > 0 ? "inf" : "-inf" }
        return d.description
    }

    var typeName: String {
        switch self {
        case .undefined: "undefined"
        case .none: "NoneType"
        case .bool: "bool"
        case .int: "int"
        case .double: "float"
        case .string: "str"
        case .list: "list"
        case .dict: "dict"
        case .namespace: "Namespace"
        case .function, .method: "function"
        }
    }

    /// Python's `==` (1 == 1.0, True == 1).
    func equals(_ other: JinjaValue) -> Bool {
        switch (self, other) {
        case (.undefined, .undefined), (.none, .none): return true
        case (.string(let a), .string(let b)): return a == b
        case (.list(let a), .list(let b)): return a.count == b.count && zip(a, b).allSatisfy { $0.equals($1) }
        case (.dict(let a), .dict(let b)):
            return a.pairs.count == b.pairs.count && a.pairs.allSatisfy { k, v in b[k].map { v.equals($0) } ?? false }
        default:
            if let x = numeric, let y = other.numeric { return x == y }
            return false
        }
    }

    var numeric: Double? {
        switch self {
        case .int(let i): Double(i)
        case .double(let d): d
        case .bool(let b): b ? 1 : 0
        default: nil
        }
    }

    /// The JSON text Hugging Face's `tojson` filter writes (`json.dumps(ensure_ascii=False)`).
    func json(indent: Int?, level: Int = 0) -> String {
        let pad = indent.map { "\n" + String(repeating: " ", count: $0 * (level + 1)) } ?? ""
        let close = indent.map { "\n" + String(repeating: " ", count: $0 * level) } ?? ""
        let itemSep = indent == nil ? ", " : ","
        switch self {
        case .undefined, .none, .function, .method: return "null"
        case .bool(let b): return b ? "true" : "false"
        case .int(let i): return String(i)
        case .double(let d): return d.isFinite ? d.description : (d.isNaN ? "NaN" : d > 0 ? "Infinity" : "-Infinity")
        case .string(let s): return String(decoding: JSON.string(s).serialized(), as: UTF8.self)
        case .list(let l):
            if l.isEmpty { return "[]" }
            return "[" + pad + l.map { $0.json(indent: indent, level: level + 1) }.joined(separator: itemSep + pad) + close + "]"
        case .dict(let d):
            if d.pairs.isEmpty { return "{}" }
            let items = d.pairs.map { JinjaValue.string($0.0.text).json(indent: nil) + ": " + $0.1.json(indent: indent, level: level + 1) }
            return "{" + pad + items.joined(separator: itemSep + pad) + close + "}"
        case .namespace(let n): return JinjaValue.dict(n.dict).json(indent: indent, level: level)
        }
    }
}

/// A dict with insertion order, keyed by values compared with Python's `==`.
struct JinjaDict {
    var pairs: [(JinjaValue, JinjaValue)]

    init(_ pairs: [(JinjaValue, JinjaValue)] = []) { self.pairs = pairs }

    subscript(key: JinjaValue) -> JinjaValue? {
        get { pairs.first { $0.0.equals(key) }?.1 }
        set {
            if let i = pairs.firstIndex(where: { $0.0.equals(key) }) {
                if let newValue { pairs[i].1 = newValue } else { pairs.remove(at: i) }
            } else if let newValue {
                pairs.append((key, newValue))
            }
        }
    }

    subscript(key: String) -> JinjaValue? { self[.string(key)] }
}

final class JinjaNamespace {
    var dict: JinjaDict
    init(_ dict: JinjaDict) { self.dict = dict }
}
