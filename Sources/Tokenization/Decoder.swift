import LoomCore
import Foundation

/// The `decoder` of tokenizer.json: turns token strings back into text (`decode_chain`, then join).
indirect enum TokenDecoder {
    case sequence([TokenDecoder])
    case replace(TextPattern, String)
    case byteFallback
    case fuse
    case strip(content: Unicode.Scalar, start: Int, stop: Int)
    case byteLevel
    case metaspace(replacement: Unicode.Scalar, prependScheme: PreTokenizer.PrependScheme)
    case bpe(suffix: String)

    init(json: JSON, file: String) throws {
        guard let type = json["type"]?.stringValue else {
            throw TokenizerError(file: file, message: "decoder without a \"type\"")
        }
        switch type {
        case "Sequence":
            let items = json["decoders"]?.arrayValue ?? []
            self = .sequence(try items.map { try TokenDecoder(json: $0, file: file) })
        case "Replace":
            let pattern = try TextPattern(json: json["pattern"], what: "Replace decoder", file: file)
            self = .replace(pattern, json["content"]?.stringValue ?? "")
        case "ByteFallback":
            self = .byteFallback
        case "Fuse":
            self = .fuse
        case "Strip":
            let content = json["content"]?.stringValue ?? " "
            guard let c = content.unicodeScalars.first, content.unicodeScalars.count == 1 else {
                throw TokenizerError(file: file, message: "Strip decoder content must be one character")
            }
            self = .strip(content: c, start: json["start"]?.intValue ?? 0, stop: json["stop"]?.intValue ?? 0)
        case "ByteLevel":
            self = .byteLevel
        case "Metaspace":
            let rep = json["replacement"]?.stringValue ?? "\u{2581}"
            guard let scalar = rep.unicodeScalars.first, rep.unicodeScalars.count == 1 else {
                throw TokenizerError(file: file, message: "Metaspace decoder replacement must be one character")
            }
            let scheme: PreTokenizer.PrependScheme
            if let name = json["prepend_scheme"]?.stringValue, let s = PreTokenizer.PrependScheme(rawValue: name) {
                scheme = s
            } else {
                scheme = (json["add_prefix_space"]?.boolValue ?? true) ? .always : .never
            }
            self = .metaspace(replacement: scalar, prependScheme: scheme)
        case "BPEDecoder":
            self = .bpe(suffix: json["suffix"]?.stringValue ?? "</w>")
        default:
            throw TokenizerError(file: file, message: "unsupported decoder type \"\(type)\"")
        }
    }

    func decode(_ tokens: [String]) -> String {
        decodeChain(tokens).joined()
    }

    func decodeChain(_ tokens: [String]) -> [String] {
        switch self {
        case .sequence(let items):
            var t = tokens
            for d in items { t = d.decodeChain(t) }
            return t
        case .replace(let pattern, let content):
            return tokens.map { pattern.replaceAll(in: $0, with: content) }
        case .byteFallback:
            return TokenDecoder.byteFallback(tokens)
        case .fuse:
            return [tokens.joined()]
        case .strip(let content, let start, let stop):
            return tokens.map { token in
                let chars = Array(token.unicodeScalars)
                var startCut = 0
                for i in 0..<min(start, chars.count) {
                    if chars[i] == content { startCut = i + 1 } else { break }
                }
                var stopCut = chars.count
                if stop > 0 {
                    for i in 0..<min(stop, chars.count) {
                        let index = chars.count - i - 1
                        if chars[index] == content { stopCut = index } else { break }
                    }
                }
                if startCut >= stopCut { return "" }
                var view = String.UnicodeScalarView()
                view.append(contentsOf: chars[startCut..<stopCut])
                return String(view)
            }
        case .byteLevel:
            var bytes: [UInt8] = []
            for token in tokens {
                var mapped: [UInt8] = []
                mapped.reserveCapacity(token.unicodeScalars.count)
                var ok = true
                for c in token.unicodeScalars {
                    guard let b = ByteLevelTable.scalarToByte[c.value] else {
                        ok = false
                        break
                    }
                    mapped.append(b)
                }
                if ok { bytes.append(contentsOf: mapped) } else { bytes.append(contentsOf: token.utf8) }
            }
            return [String(decoding: bytes, as: UTF8.self)]
        case .metaspace(let replacement, let scheme):
            return tokens.enumerated().map { i, token in
                var view = String.UnicodeScalarView()
                for c in token.unicodeScalars {
                    if c == replacement {
                        if i == 0 && scheme != .never { continue }
                        view.append(" ")
                    } else {
                        view.append(c)
                    }
                }
                return String(view)
            }
        case .bpe(let suffix):
            let last = tokens.count - 1
            return tokens.enumerated().map { i, token in
                TextPattern.literal(Array(suffix.utf8)).replaceAll(in: token, with: i == last ? "" : " ")
            }
        }
    }

    /// The byte value of a "<0xNN>" token.
    static func byteValue(_ token: String) -> UInt8? {
        let u = token.utf8
        guard u.count == 6 else { return nil }
        let b = Array(u)
        guard b[0] == UInt8(ascii: "<"), b[1] == UInt8(ascii: "0"), b[2] == UInt8(ascii: "x"),
            b[5] == UInt8(ascii: ">")
        else { return nil }
        func hex(_ c: UInt8) -> UInt8? {
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
            default: return nil
            }
        }
        guard let hi = hex(b[3]), let lo = hex(b[4]) else { return nil }
        return hi << 4 | lo
    }

    /// `ByteFallback`: consecutive "<0xNN>" tokens become their UTF-8 string, or one U+FFFD per
    /// byte when the run is not valid UTF-8.
    static func byteFallback(_ tokens: [String]) -> [String] {
        var out: [String] = []
        out.reserveCapacity(tokens.count)
        var run: [UInt8] = []
        func flush() {
            guard !run.isEmpty else { return }
            if let s = String(validating: run, as: UTF8.self) {
                out.append(s)
            } else {
                for _ in run { out.append("\u{FFFD}") }
            }
            run.removeAll(keepingCapacity: true)
        }
        for token in tokens {
            if let b = byteValue(token) {
                run.append(b)
            } else {
                flush()
                out.append(token)
            }
        }
        flush()
        return out
    }
}
