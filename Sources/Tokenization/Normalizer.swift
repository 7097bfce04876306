import LoomCore
import Foundation

/// The `normalizer` of tokenizer.json.
indirect enum Normalizer {
    case sequence([Normalizer])
    case prepend(String)
    case replace(TextPattern, String)
    case nfc, nfd, nfkc, nfkd
    case lowercase
    case strip(left: Bool, right: Bool)
    case stripAccents
    case byteLevel

    init(json: JSON, file: String) throws {
        guard let type = json["type"]?.stringValue else {
            throw TokenizerError(file: file, message: "normalizer without a \"type\"")
        }
        switch type {
        case "Sequence":
            let items = json["normalizers"]?.arrayValue ?? []
            self = .sequence(try items.map { try Normalizer(json: $0, file: file) })
        case "Prepend":
            guard let p = json["prepend"]?.stringValue else {
                throw TokenizerError(file: file, message: "Prepend normalizer without \"prepend\"")
            }
            self = .prepend(p)
        case "Replace":
            let pattern = try TextPattern(json: json["pattern"], what: "Replace normalizer", file: file)
            self = .replace(pattern, json["content"]?.stringValue ?? "")
        case "NFC": self = .nfc
        case "NFD": self = .nfd
        case "NFKC": self = .nfkc
        case "NFKD": self = .nfkd
        case "Lowercase": self = .lowercase
        case "Strip":
            self = .strip(left: json["strip_left"]?.boolValue ?? true, right: json["strip_right"]?.boolValue ?? true)
        case "StripAccents": self = .stripAccents
        case "ByteLevel": self = .byteLevel
        default:
            throw TokenizerError(file: file, message: "unsupported normalizer type \"\(type)\"")
        }
    }

    func apply(_ s: String) -> String {
        switch self {
        case .sequence(let items):
            var t = s
            for n in items { t = n.apply(t) }
            return t
        case .prepend(let p):
            return s.isEmpty ? s : p + s
        case .replace(let pattern, let content):
            return pattern.replaceAll(in: s, with: content)
        case .nfc: return s.precomposedStringWithCanonicalMapping
        case .nfd: return s.decomposedStringWithCanonicalMapping
        case .nfkc: return s.precomposedStringWithCompatibilityMapping
        case .nfkd: return s.decomposedStringWithCompatibilityMapping
        case .lowercase: return s.lowercased()
        case .strip(let left, let right):
            var scalars = Array(s.unicodeScalars)
            if right { while let l = scalars.last, l.isRustWhitespace { scalars.removeLast() } }
            var start = 0
            if left { while start < scalars.count && scalars[start].isRustWhitespace { start += 1 } }
            var view = String.UnicodeScalarView()
            view.append(contentsOf: scalars[start...])
            return String(view)
        case .stripAccents:
            var view = String.UnicodeScalarView()
            for c in s.unicodeScalars where !c.isCombiningMark { view.append(c) }
            return String(view)
        case .byteLevel:
            return ByteLevelTable.encode(s)
        }
    }
}
