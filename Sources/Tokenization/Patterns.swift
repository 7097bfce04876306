import LoomCore
import Foundation

/// GPT-2's byte <-> unicode mapping used by the ByteLevel pre-tokenizer, normalizer and decoder:
/// printable bytes map to themselves, the others to U+0100 and up.
enum ByteLevelTable {
    static let byteToScalar: [Unicode.Scalar] = {
        var table = [Unicode.Scalar](repeating: "\0", count: 256)
        var n: UInt32 = 0
        for b in 0..<256 {
            let printable = (0x21...0x7E).contains(b) || (0xA1...0xAC).contains(b) || (0xAE...0xFF).contains(b)
            if printable {
                table[b] = Unicode.Scalar(UInt32(b))!
            } else {
                table[b] = Unicode.Scalar(256 + n)!
                n += 1
            }
        }
        return table
    }()

    static let scalarToByte: [UInt32: UInt8] = {
        var map: [UInt32: UInt8] = [:]
        for (b, s) in byteToScalar.enumerated() { map[s.value] = UInt8(b) }
        return map
    }()

    /// Maps every UTF-8 byte of `text` to its byte-level character.
    static func encode(_ text: String) -> String {
        var scalars = String.UnicodeScalarView()
        for b in text.utf8 { scalars.append(byteToScalar[Int(b)]) }
        return String(scalars)
    }
}

/// A pattern of `Split` pre-tokenizers and `Replace` normalizers/decoders:
/// `{"String": "..."}` (literal) or `{"Regex": "..."}`.
enum TextPattern {
    case literal([UInt8])
    case regex(NSRegularExpression)

    init(json: JSON?, what: String, file: String) throws {
        if let s = json?["String"]?.stringValue {
            self = .literal(Array(s.utf8))
        } else if let r = json?["Regex"]?.stringValue {
            self = .regex(try compileRegex(r, what: what, file: file))
        } else if let s = json?.stringValue {
            self = .literal(Array(s.utf8))
        } else {
            throw TokenizerError(file: file, message: "\(what): pattern must be {\"String\": ...} or {\"Regex\": ...}")
        }
    }

    /// The string cut into consecutive segments covering all of it, each flagged as a match or not
    /// (the `find_matches` of `tokenizers`). An empty string gives one empty non-match.
    func segments(_ s: String) -> [(text: String, isMatch: Bool)] {
        if s.isEmpty { return [("", false)] }
        switch self {
        case .literal(let needle):
            let bytes = Array(s.utf8)
            var out: [(text: String, isMatch: Bool)] = []
            var prev = 0
            for r in literalMatches(needle, in: bytes) {
                if prev != r.lowerBound { out.append((decodeUTF8(bytes[prev..<r.lowerBound]), false)) }
                out.append((decodeUTF8(bytes[r]), true))
                prev = r.upperBound
            }
            if prev != bytes.count { out.append((decodeUTF8(bytes[prev...]), false)) }
            return out
        case .regex(let re):
            let ns = s as NSString
            let length = ns.length
            var out: [(text: String, isMatch: Bool)] = []
            var prev = 0
            for m in re.matches(in: s, options: [], range: NSRange(location: 0, length: length)) {
                let r = m.range
                if prev != r.location {
                    out.append((ns.substring(with: NSRange(location: prev, length: r.location - prev)), false))
                }
                out.append((ns.substring(with: r), true))
                prev = r.location + r.length
            }
            if prev != length { out.append((ns.substring(from: prev), false)) }
            return out
        }
    }

    /// Replaces every (non-overlapping, leftmost) match by `content`.
    func replaceAll(in s: String, with content: String) -> String {
        switch self {
        case .literal(let needle):
            let bytes = Array(s.utf8)
            let matches = literalMatches(needle, in: bytes)
            if matches.isEmpty { return s }
            var out: [UInt8] = []
            out.reserveCapacity(bytes.count)
            var prev = 0
            let replacement = Array(content.utf8)
            for r in matches {
                out.append(contentsOf: bytes[prev..<r.lowerBound])
                out.append(contentsOf: replacement)
                prev = r.upperBound
            }
            out.append(contentsOf: bytes[prev...])
            return decodeUTF8(out[...])
        case .regex(let re):
            let ns = s as NSString
            return re.stringByReplacingMatches(
                in: s, options: [], range: NSRange(location: 0, length: ns.length),
                withTemplate: NSRegularExpression.escapedTemplate(for: content))
        }
    }
}

@inline(__always) func decodeUTF8(_ bytes: ArraySlice<UInt8>) -> String {
    String(decoding: bytes, as: UTF8.self)
}

/// Non-overlapping occurrences of `needle` in `haystack`, left to right.
func literalMatches(_ needle: [UInt8], in haystack: [UInt8]) -> [Range<Int>] {
    guard !needle.isEmpty, needle.count <= haystack.count else { return [] }
    var out: [Range<Int>] = []
    let first = needle[0]
    let n = needle.count
    var i = 0
    let last = haystack.count - n
    while i <= last {
        if haystack[i] == first {
            var j = 1
            while j < n && haystack[i + j] == needle[j] { j += 1 }
            if j == n {
                out.append(i..<(i + n))
                i += n
                continue
            }
        }
        i += 1
    }
    return out
}

/// Compiles a `tokenizers` (Oniguruma) regular expression with ICU. The patterns used by
/// tokenizers (GPT-2, Llama 3, Qwen2, ...) use syntax that both engines read alike.
func compileRegex(_ pattern: String, what: String, file: String) throws -> NSRegularExpression {
    do {
        return try NSRegularExpression(pattern: pattern, options: [])
    } catch {
        throw TokenizerError(file: file, message: "\(what): unsupported regular expression \(pattern.debugDescription)")
    }
}

// MARK: - Character classes as Rust's `char` methods define them

extension Unicode.Scalar {
    /// Rust `char::is_whitespace` (Unicode White_Space).
    var isRustWhitespace: Bool { properties.isWhitespace }

    /// Rust `char::is_numeric`: general categories Nd, Nl, No.
    var isRustNumeric: Bool {
        switch properties.generalCategory {
        case .decimalNumber, .letterNumber, .otherNumber: return true
        default: return false
        }
    }

    var isUnicodePunctuation: Bool {
        switch properties.generalCategory {
        case .connectorPunctuation, .dashPunctuation, .closePunctuation, .finalPunctuation,
            .initialPunctuation, .otherPunctuation, .openPunctuation:
            return true
        default: return false
        }
    }

    var isASCIIPunctuation: Bool {
        let v = value
        return (0x21...0x2F).contains(v) || (0x3A...0x40).contains(v) || (0x5B...0x60).contains(v)
            || (0x7B...0x7E).contains(v)
    }

    /// The `\w` of the Rust regex crate: Alphabetic, M, Nd, Pc, Join_Control.
    var isWordCharacter: Bool {
        let p = properties
        if p.isAlphabetic || p.isJoinControl { return true }
        switch p.generalCategory {
        case .nonspacingMark, .spacingMark, .enclosingMark, .decimalNumber, .connectorPunctuation: return true
        default: return false
        }
    }

    var isCombiningMark: Bool {
        switch properties.generalCategory {
        case .nonspacingMark, .spacingMark, .enclosingMark: return true
        default: return false
        }
    }
}

/// Segments for a per-character predicate: each matching character is its own match, runs of
/// non-matching characters are single non-matches.
func characterSegments(_ s: String, _ predicate: (Unicode.Scalar) -> Bool) -> [(text: String, isMatch: Bool)] {
    if s.isEmpty { return [("", false)] }
    var out: [(text: String, isMatch: Bool)] = []
    var gap = String.UnicodeScalarView()
    for c in s.unicodeScalars {
        if predicate(c) {
            if !gap.isEmpty {
                out.append((String(gap), false))
                gap = String.UnicodeScalarView()
            }
            out.append((String(c), true))
        } else {
            gap.append(c)
        }
    }
    if !gap.isEmpty { out.append((String(gap), false)) }
    return out
}

/// Byte-for-byte string equality (`==` on `String` is canonical equivalence).
@inline(__always) func identical(_ a: String, _ b: String) -> Bool {
    a.utf8.elementsEqual(b.utf8)
}
