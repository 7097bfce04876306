import Foundation

/// The filters, tests, methods and global functions that chat templates use.
extension JinjaRenderer {
    static let globals: Set<String> = ["raise_exception", "namespace", "range", "dict", "strftime_now"]

    static func methodNames(of value: JinjaValue) -> Set<String> {
        switch value {
        case .string:
            ["strip", "lstrip", "rstrip", "startswith", "endswith", "split", "lower", "upper", "title", "capitalize", "replace", "find", "count", "join", "splitlines"]
        case .dict: ["items", "keys", "values", "get"]
        default: []
        }
    }

    mutating func call(_ f: JinjaValue, _ args: [JinjaValue], _ kwargs: [(String, JinjaValue)]) throws -> JinjaValue {
        switch f {
        case .function(let name): return try Self.callGlobal(name, args, kwargs)
        case .method(let base, let name): return try Self.callMethod(base, name, args)
        case .undefined: throw TemplateError("a called function is undefined")
        default: throw TemplateError("'\(f.typeName)' object is not callable")
        }
    }

    private static func callGlobal(_ name: String, _ args: [JinjaValue], _ kwargs: [(String, JinjaValue)]) throws -> JinjaValue {
        switch name {
        case "raise_exception":
            throw TemplateError(args.first?.text ?? "raise_exception was called")
        case "namespace", "dict":
            var d = JinjaDict()
            if case .dict(let initial)? = args.first { d = initial }
            for (k, v) in kwargs { d[.string(k)] = v }
            return name == "namespace" ? .namespace(JinjaNamespace(d)) : .dict(d)
        case "range":
            let ints = args.compactMap { if case .int(let i) = $0 { i } else { nil } }
            guard ints.count == args.count, (1...3).contains(ints.count) else { throw TemplateError("range() takes 1 to 3 integers") }
            let (start, stop, step) = ints.count == 1 ? (0, ints[0], 1) : (ints[0], ints[1], ints.count == 3 ? ints[2] : 1)
            guard step != 0 else { throw TemplateError("range() step must not be zero") }
            return .list(stride(from: start, to: stop, by: step).map { .int($0) })
        case "strftime_now":
            return .string(formatNow(args.first?.text ?? "%Y-%m-%d"))
        default:
            throw TemplateError("unknown function \(name)")
        }
    }

    private static func formatNow(_ format: String) -> String {
        var t = time(nil)
        var tmValue = tm()
        localtime_r(&t, &tmValue)
        var buffer = [Int8](repeating: 0, count: 256)
        let n = strftime(&buffer, buffer.count, format, &tmValue)
        return String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    private static func callMethod(_ base: JinjaValue, _ name: String, _ args: [JinjaValue]) throws -> JinjaValue {
        if case .dict(let d) = base {
            switch name {
            case "items": return .list(d.pairs.map { .list([$0.0, $0.1]) })
            case "keys": return .list(d.pairs.map(\.0))
            case "values": return .list(d.pairs.map(\.1))
            default: return d[args.first ?? .none] ?? (args.count > 1 ? args[1] : .none)
            }
        }
        guard case .string(let s) = base else { throw TemplateError("'\(base.typeName)' has no method \(name)") }
        let a0 = args.first.map(\.text)
        switch name {
        case "strip": return .string(strip(s, a0, leading: true, trailing: true))
        case "lstrip": return .string(strip(s, a0, leading: true, trailing: false))
        case "rstrip": return .string(strip(s, a0, leading: false, trailing: true))
        case "startswith": return .bool(s.hasPrefix(a0 ?? ""))
        case "endswith": return .bool(s.hasSuffix(a0 ?? ""))
        case "lower": return .string(s.lowercased())
        case "upper": return .string(s.uppercased())
        case "title": return .string(s.capitalized)
        case "capitalize": return .string(s.prefix(1).uppercased() + s.dropFirst().lowercased())
        case "replace": return .string(s.replacingOccurrences(of: a0 ?? "", with: args.count > 1 ? args[1].text : ""))
        case "find": return .int(s.range(of: a0 ?? "").map { s.distance(from: s.startIndex, to: $0.lowerBound) } ?? -1)
        case "count": return .int(a0.map { $0.isEmpty ? s.count + 1 : s.components(separatedBy: $0).count - 1 } ?? 0)
        case "splitlines": return .list(s.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline).map { .string(String($0)) })
        case "join":
            guard case .list(let items)? = args.first else { throw TemplateError("join() needs a list") }
            return .string(items.map(\.text).joined(separator: s))
        default:
            var parts: [String]
            if let sep = a0, case .string = args[0] {
                parts = s.components(separatedBy: sep)
            } else {
                parts = s.split(whereSeparator: { $0.isWhitespace }).map(String.init)
            }
            if args.count > 1, case .int(let maxSplit) = args[1], maxSplit >= 0, parts.count > maxSplit + 1, let sep = a0 {
                parts = Array(parts[..<maxSplit]) + [parts[maxSplit...].joined(separator: sep)]
            }
            return .list(parts.map { .string($0) })
        }
    }

    static func strip(_ s: String, _ chars: String?, leading: Bool, trailing: Bool) -> String {
        let set: (Character) -> Bool = chars.map { c in { c.contains($0) } } ?? { $0.isWhitespace }
        var sub = Substring(s)
        if leading { sub = sub.drop(while: set) }
        if trailing { while let l = sub.last, set(l) { sub = sub.dropLast() } }
        return String(sub)
    }

    mutating func applyFilter(_ name: String, _ v: JinjaValue, _ args: [JinjaValue], _ kwargs: [(String, JinjaValue)]) throws -> JinjaValue {
        func kw(_ key: String) -> JinjaValue? { kwargs.first { $0.0 == key }?.1 }
        switch name {
        case "trim": return .string(Self.strip(v.text, args.first?.text, leading: true, trailing: true))
        case "length", "count":
            switch v {
            case .string(let s): return .int(s.count)
            case .list(let l): return .int(l.count)
            case .dict(let d): return .int(d.pairs.count)
            case .undefined: return .int(0)
            default: throw TemplateError("object of type '\(v.typeName)' has no length")
            }
        case "lower": return .string(v.text.lowercased())
        case "upper": return .string(v.text.uppercased())
        case "title": return .string(v.text.capitalized)
        case "capitalize": return .string(v.text.prefix(1).uppercased() + v.text.dropFirst().lowercased())
        case "string": return .string(v.text)
        case "safe": return v
        case "e", "escape", "forceescape":
            return .string(v.text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
                .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&#34;").replacingOccurrences(of: "'", with: "&#39;"))
        case "int": return .int(Int(v.numeric ?? Double(v.text.trimmingCharacters(in: .whitespaces)) ?? 0))
        case "float": return .double(v.numeric ?? Double(v.text.trimmingCharacters(in: .whitespaces)) ?? 0)
        case "abs": return v.numeric.map { n in if case .int(let i) = v { .int(abs(i)) } else { .double(abs(n)) } } ?? v
        case "default", "d":
            let boolean = (args.count > 1 ? args[1] : kw("boolean") ?? .bool(false)).isTruthy
            let fallback = args.first ?? kw("default_value") ?? .string("")
            return (boolean ? v.isTruthy : v.isDefined) ? v : fallback
        case "join":
            let sep = (args.first ?? kw("d") ?? .string("")).text
            var items = try Self.iterate(v)
            if let attr = kw("attribute")?.text { items = try items.map { try Self.attribute($0, attr) } }
            return .string(items.map(\.text).joined(separator: sep))
        case "first": return try Self.iterate(v).first ?? .undefined
        case "last": return try Self.iterate(v).last ?? .undefined
        case "list": return .list(try Self.iterate(v))
        case "reverse":
            if case .string(let s) = v { return .string(String(s.reversed())) }
            return .list(try Self.iterate(v).reversed())
        case "replace": return .string(v.text.replacingOccurrences(of: args.first?.text ?? "", with: args.count > 1 ? args[1].text : ""))
        case "tojson":
            let indent = (args.first ?? kw("indent")).flatMap { if case .int(let i) = $0 { i } else { nil } }
            return .string(v.json(indent: indent))
        case "items":
            guard case .dict(let d) = v else { return .list([]) }
            return .list(d.pairs.map { .list([$0.0, $0.1]) })
        case "dictsort":
            guard case .dict(let d) = v else { throw TemplateError("dictsort needs a dict") }
            return .list(d.pairs.sorted { $0.0.text < $1.0.text }.map { .list([$0.0, $0.1]) })
        case "unique":
            var seen: [JinjaValue] = []
            for item in try Self.iterate(v) where !seen.contains(where: { $0.equals(item) }) { seen.append(item) }
            return .list(seen)
        case "map":
            let items = try Self.iterate(v)
            if let attr = kw("attribute")?.text {
                return .list(try items.map { item in
                    let a = try Self.attribute(item, attr)
                    return a.isDefined ? a : (kw("default") ?? .undefined)
                })
            }
            guard let filterName = args.first?.text else { throw TemplateError("map() needs a filter name or attribute=") }
            return .list(try items.map { try applyFilter(filterName, $0, Array(args.dropFirst()), []) })
        case "select", "reject", "selectattr", "rejectattr":
            let byAttribute = name.hasSuffix("attr")
            let keep = name.hasPrefix("select")
            var rest = args
            let attr = byAttribute ? (rest.isEmpty ? nil : rest.removeFirst().text) : nil
            let testName = rest.isEmpty ? nil : rest.removeFirst().text
            return .list(try Self.iterate(v).filter { item in
                let subject = try attr.map { try Self.attribute(item, $0) } ?? item
                let passed = try testName.map { try Self.applyTest($0, subject, rest) } ?? subject.isTruthy
                return passed == keep
            })
        case "indent":
            let width = args.first.flatMap { if case .int(let i) = $0 { i } else { nil } } ?? 4
            let pad = String(repeating: " ", count: width)
            let lines = v.text.components(separatedBy: "\n")
            return .string(([lines[0]] + lines.dropFirst().map { $0.isEmpty ? $0 : pad + $0 }).joined(separator: "\n"))
        case "wordcount": return .int(v.text.split(whereSeparator: { $0.isWhitespace }).count)
        default:
            throw TemplateError("unknown filter '\(name)'")
        }
    }

    static func applyTest(_ name: String, _ v: JinjaValue, _ args: [JinjaValue]) throws -> Bool {
        switch name {
        case "defined": return v.isDefined
        case "undefined": return !v.isDefined
        case "none": if case .none = v { return true } else { return false }
        case "string": if case .string = v { return true } else { return false }
        case "number": switch v { case .int, .double: return true; default: return false }
        case "integer": if case .int = v { return true } else { return false }
        case "float": if case .double = v { return true } else { return false }
        case "boolean": if case .bool = v { return true } else { return false }
        case "true": if case .bool(true) = v { return true } else { return false }
        case "false": if case .bool(false) = v { return true } else { return false }
        case "mapping": switch v { case .dict, .namespace: return true; default: return false }
        case "iterable": switch v { case .list, .dict, .string: return true; default: return false }
        case "sequence": switch v { case .list, .string, .dict: return true; default: return false }
        case "callable": switch v { case .function, .method: return true; default: return false }
        case "equalto", "eq", "==", "sameas": return v.equals(args.first ?? .undefined)
        case "ne", "!=": return !v.equals(args.first ?? .undefined)
        case "in": return try binary("in", v, args.first ?? .undefined).isTruthy
        case "odd", "even", "divisibleby":
            guard case .int(let i) = v else { throw TemplateError("the '\(name)' test needs an integer") }
            if name == "odd" { return i % 2 != 0 }
            if name == "even" { return i % 2 == 0 }
            guard case .int(let d)? = args.first, d != 0 else { throw TemplateError("divisibleby needs a non-zero integer") }
            return i % d == 0
        case "lower": return v.text == v.text.lowercased()
        case "upper": return v.text == v.text.uppercased()
        case "gt", ">": return try binary(">", v, args.first ?? .undefined).isTruthy
        case "ge", ">=": return try binary(">=", v, args.first ?? .undefined).isTruthy
        case "lt", "<": return try binary("<", v, args.first ?? .undefined).isTruthy
        case "le", "<=": return try binary("<=", v, args.first ?? .undefined).isTruthy
        default: throw TemplateError("unknown test '\(name)'")
        }
    }
}
