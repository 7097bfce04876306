/// A template error: a syntax error, an unsupported construct, or `raise_exception(...)`.
public struct TemplateError: Error, CustomStringConvertible, Sendable {
    public var message: String
    /// The 1-based line of the template where it happened, when known.
    public var line: Int?

    public init(_ message: String, line: Int? = nil) {
        self.message = message
        self.line = line
    }

    public var description: String { line.map { "\(message) (template line \($0))" } ?? message }
}

/// One token inside `{{ }}` or `{% %}`.
enum JinjaToken: Equatable {
    case name(String)
    case string(String)
    case int(Int)
    case float(Double)
    case op(String)
}

/// What the lexer cuts a template into: literal text, `{{ expression }}` and `{% statement %}`.
enum JinjaSegment {
    case text(String)
    case output([JinjaToken], line: Int)
    case statement([JinjaToken], line: Int)
}

/// Splits a template as Hugging Face's chat-template environment does (`trim_blocks=True`,
/// `lstrip_blocks=True`): the newline after a block or comment tag is dropped, whitespace before a
/// block tag that starts a line is dropped, and `-` on a delimiter strips all whitespace on that side.
struct JinjaLexer {
    private let s: [UInt8]
    private var i = 0
    private var line = 1

    init(_ source: String) { s = Array(source.utf8) }

    static func segments(_ source: String) throws -> [JinjaSegment] {
        var lexer = JinjaLexer(source)
        return try lexer.run()
    }

    private func at(_ p: Int, _ text: String) -> Bool {
        let t = Array(text.utf8)
        return p + t.count <= s.count && Array(s[p..<p + t.count]) == t
    }

    private mutating func run() throws -> [JinjaSegment] {
        var out: [JinjaSegment] = []
        var stripLeading = false
        var trimNewline = false
        while i < s.count {
            // Literal text up to the next tag.
            var p = i
            while p < s.count, !(s[p] == UInt8(ascii: "{") && p + 1 < s.count && [UInt8(ascii: "{"), UInt8(ascii: "%"), UInt8(ascii: "#")].contains(s[p + 1])) {
                p += 1
            }
            var text = Array(s[i..<p])
            if stripLeading {
                while let f = text.first, Self.isSpace(f) { text.removeFirst() }
            } else if trimNewline {
                if text.first == 0x0A { text.removeFirst() } else if text.starts(with: [0x0D, 0x0A]) { text.removeFirst(2) }
            }
            stripLeading = false
            trimNewline = false
            countLines(s[i..<p])
            i = p
            guard i < s.count else {
                if !text.isEmpty { out.append(.text(String(decoding: text, as: UTF8.self))) }
                break
            }
            let kind = s[i + 1]
            i += 2
            var stripBefore = false
            var noLstrip = false
            if i < s.count, s[i] == UInt8(ascii: "-") { stripBefore = true; i += 1 } else if i < s.count, s[i] == UInt8(ascii: "+") { noLstrip = true; i += 1 }
            if stripBefore {
                while let l = text.last, Self.isSpace(l) { text.removeLast() }
            } else if kind != UInt8(ascii: "{") && !noLstrip && isLineStart(p) {
                // lstrip_blocks: drop spaces and tabs between the line start and a block tag.
                while let l = text.last, l == 0x20 || l == 0x09 { text.removeLast() }
            }
            if !text.isEmpty { out.append(.text(String(decoding: text, as: UTF8.self))) }
            let tagLine = line
            switch kind {
            case UInt8(ascii: "#"):
                guard let end = find("#}") else { throw TemplateError("unterminated comment", line: tagLine) }
                countLines(s[i..<end])
                stripLeading = end > i && s[end - 1] == UInt8(ascii: "-")
                i = end + 2
                trimNewline = !stripLeading
            case UInt8(ascii: "{"):
                let (tokens, strip) = try tokens(until: "}}", line: tagLine)
                out.append(.output(tokens, line: tagLine))
                stripLeading = strip
            default:
                let (tokens, strip) = try tokens(until: "%}", line: tagLine)
                if tokens.first == .name("raw") {
                    throw TemplateError("{% raw %} is not supported by Loom's template renderer", line: tagLine)
                }
                out.append(.statement(tokens, line: tagLine))
                stripLeading = strip
                trimNewline = !strip
            }
        }
        return out
    }

    /// True when only spaces and tabs separate byte `p` from the start of its line.
    private func isLineStart(_ p: Int) -> Bool {
        var k = p - 1
        while k >= 0, s[k] == 0x20 || s[k] == 0x09 { k -= 1 }
        return k < 0 || s[k] == 0x0A
    }

    private static func isSpace(_ b: UInt8) -> Bool { b == 0x20 || b == 0x09 || b == 0x0A || b == 0x0D }

    private mutating func countLines(_ bytes: ArraySlice<UInt8>) {
        line += bytes.reduce(0) { $0 + ($1 == 0x0A ? 1 : 0) }
    }

    private func find(_ text: String) -> Int? {
        var p = i
        while p < s.count {
            if at(p, text) { return p }
            p += 1
        }
        return nil
    }

    /// Tokens up to the closing delimiter `end`; also whether it was written `-end`.
    private mutating func tokens(until end: String, line tagLine: Int) throws -> ([JinjaToken], Bool) {
        var tokens: [JinjaToken] = []
        while true {
            while i < s.count, Self.isSpace(s[i]) {
                if s[i] == 0x0A { line += 1 }
                i += 1
            }
            guard i < s.count else { throw TemplateError("unterminated tag: expected '\(end)'", line: tagLine) }
            if at(i, "-" + end) { i += 1 + end.utf8.count; return (tokens, true) }
            if at(i, end) { i += end.utf8.count; return (tokens, false) }
            let c = s[i]
            if c == UInt8(ascii: "'") || c == UInt8(ascii: "\"") {
                tokens.append(.string(try stringLiteral(quote: c, line: tagLine)))
            } else if Self.isDigit(c) {
                tokens.append(number())
            } else if Self.isNameStart(c) {
                let start = i
                while i < s.count, Self.isNameStart(s[i]) || Self.isDigit(s[i]) { i += 1 }
                tokens.append(.name(String(decoding: s[start..<i], as: UTF8.self)))
            } else if let op = ["**", "//", "==", "!=", "<=", ">="].first(where: { at(i, $0) }) {
                tokens.append(.op(op))
                i += 2
            } else if "+-*/%~<>()[]{},.:|=".utf8.contains(c) {
                tokens.append(.op(String(UnicodeScalar(c))))
                i += 1
            } else {
                throw TemplateError("unexpected character '\(String(UnicodeScalar(c)))' in a tag", line: tagLine)
            }
        }
    }

    private mutating func number() -> JinjaToken {
        let start = i
        while i < s.count, Self.isDigit(s[i]) || s[i] == UInt8(ascii: "_") { i += 1 }
        var isFloat = false
        if i + 1 < s.count, s[i] == UInt8(ascii: "."), Self.isDigit(s[i + 1]) {
            isFloat = true
            i += 1
            while i < s.count, Self.isDigit(s[i]) { i += 1 }
        }
        let text = String(decoding: s[start..<i], as: UTF8.self).replacingOccurrences(of: "_", with: "")
        return isFloat ? .float(Double(text) ?? 0) : .int(Int(text) ?? 0)
    }

    private mutating func stringLiteral(quote: UInt8, line tagLine: Int) throws -> String {
        i += 1
        var out: [UInt8] = []
        while i < s.count, s[i] != quote {
            if s[i] == UInt8(ascii: "\\"), i + 1 < s.count {
                i += 1
                switch s[i] {
                case UInt8(ascii: "n"): out.append(0x0A)
                case UInt8(ascii: "t"): out.append(0x09)
                case UInt8(ascii: "r"): out.append(0x0D)
                case UInt8(ascii: "\\"), UInt8(ascii: "'"), UInt8(ascii: "\""): out.append(s[i])
                default: out += [UInt8(ascii: "\\"), s[i]]
                }
            } else {
                if s[i] == 0x0A { line += 1 }
                out.append(s[i])
            }
            i += 1
        }
        guard i < s.count else { throw TemplateError("unterminated string literal", line: tagLine) }
        i += 1
        return String(decoding: out, as: UTF8.self)
    }

    private static func isDigit(_ c: UInt8) -> Bool { c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9") }
    private static func isNameStart(_ c: UInt8) -> Bool {
        (c >= UInt8(ascii: "a") && c <= UInt8(ascii: "z")) || (c >= UInt8(ascii: "A") && c <= UInt8(ascii: "Z")) || c == UInt8(ascii: "_")
    }
}
