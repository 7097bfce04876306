import LoomCore
import Foundation

/// A piece of text during pre-tokenization. `atStart` says whether it begins at offset 0 of the
/// original input (what Metaspace's prepend_scheme "first" looks at).
struct Piece {
    var text: String
    var atStart: Bool
}

enum SplitBehavior: String {
    case removed = "Removed"
    case isolated = "Isolated"
    case mergedWithPrevious = "MergedWithPrevious"
    case mergedWithNext = "MergedWithNext"
    case contiguous = "Contiguous"

    init(json: JSON?, default fallback: SplitBehavior, file: String) throws {
        guard let name = json?.stringValue else {
            self = fallback
            return
        }
        guard let b = SplitBehavior(rawValue: name) else {
            throw TokenizerError(file: file, message: "unknown split behavior \"\(name)\"")
        }
        self = b
    }

    /// Combines match/non-match segments as `NormalizedString::split` does; returns the pieces
    /// with the UTF-8 offset at which each starts.
    func apply(_ segments: [(text: String, isMatch: Bool)]) -> [(text: String, offset: Int)] {
        var offsets: [Int] = []
        offsets.reserveCapacity(segments.count)
        var o = 0
        for s in segments {
            offsets.append(o)
            o += s.text.utf8.count
        }
        var out: [(text: String, offset: Int)] = []
        switch self {
        case .isolated:
            for (i, s) in segments.enumerated() { out.append((s.text, offsets[i])) }
        case .removed:
            for (i, s) in segments.enumerated() where !s.isMatch { out.append((s.text, offsets[i])) }
        case .contiguous:
            var previousMatch = false
            for (i, s) in segments.enumerated() {
                if s.isMatch == previousMatch, !out.isEmpty {
                    out[out.count - 1].text += s.text
                } else {
                    out.append((s.text, offsets[i]))
                }
                previousMatch = s.isMatch
            }
        case .mergedWithPrevious:
            var previousMatch = false
            for (i, s) in segments.enumerated() {
                if s.isMatch && !previousMatch, !out.isEmpty {
                    out[out.count - 1].text += s.text
                } else {
                    out.append((s.text, offsets[i]))
                }
                previousMatch = s.isMatch
            }
        case .mergedWithNext:
            var previousMatch = false
            var reversed: [(text: String, offset: Int)] = []
            for i in stride(from: segments.count - 1, through: 0, by: -1) {
                let s = segments[i]
                if s.isMatch && !previousMatch, !reversed.isEmpty {
                    reversed[reversed.count - 1].text = s.text + reversed[reversed.count - 1].text
                    reversed[reversed.count - 1].offset = offsets[i]
                } else {
                    reversed.append((s.text, offsets[i]))
                }
                previousMatch = s.isMatch
            }
            out = reversed.reversed()
        }
        return out
    }
}

/// The `pre_tokenizer` of tokenizer.json.
indirect enum PreTokenizer {
    enum PrependScheme: String {
        case always, first, never
    }

    case sequence([PreTokenizer])
    case metaspace(replacement: Unicode.Scalar, scheme: PrependScheme, split: Bool)
    case byteLevel(addPrefixSpace: Bool, useRegex: Bool)
    case split(TextPattern, SplitBehavior, invert: Bool)
    case digits(individual: Bool)
    case whitespace
    case whitespaceSplit
    case punctuation(SplitBehavior)

    /// The GPT-2 pattern of the ByteLevel pre-tokenizer.
    static let gpt2Pattern = #"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"#
    static let gpt2Regex = try! NSRegularExpression(pattern: gpt2Pattern, options: [])
    static let whitespaceRegex = try! NSRegularExpression(pattern: #"\w+|[^\w\s]+"#, options: [])

    init(json: JSON, file: String) throws {
        guard let type = json["type"]?.stringValue else {
            throw TokenizerError(file: file, message: "pre_tokenizer without a \"type\"")
        }
        switch type {
        case "Sequence":
            let items = json["pretokenizers"]?.arrayValue ?? []
            self = .sequence(try items.map { try PreTokenizer(json: $0, file: file) })
        case "Metaspace":
            let rep = json["replacement"]?.stringValue ?? "\u{2581}"
            guard let scalar = rep.unicodeScalars.first, rep.unicodeScalars.count == 1 else {
                throw TokenizerError(file: file, message: "Metaspace replacement must be one character")
            }
            let scheme: PrependScheme
            if let name = json["prepend_scheme"]?.stringValue {
                guard let s = PrependScheme(rawValue: name) else {
                    throw TokenizerError(file: file, message: "unknown Metaspace prepend_scheme \"\(name)\"")
                }
                scheme = s
            } else {
                scheme = (json["add_prefix_space"]?.boolValue ?? true) ? .always : .never
            }
            self = .metaspace(replacement: scalar, scheme: scheme, split: json["split"]?.boolValue ?? true)
        case "ByteLevel":
            self = .byteLevel(
                addPrefixSpace: json["add_prefix_space"]?.boolValue ?? true,
                useRegex: json["use_regex"]?.boolValue ?? true)
        case "Split":
            let pattern = try TextPattern(json: json["pattern"], what: "Split pre-tokenizer", file: file)
            let behavior = try SplitBehavior(json: json["behavior"], default: .isolated, file: file)
            self = .split(pattern, behavior, invert: json["invert"]?.boolValue ?? false)
        case "Digits":
            self = .digits(individual: json["individual_digits"]?.boolValue ?? false)
        case "Whitespace":
            self = .whitespace
        case "WhitespaceSplit":
            self = .whitespaceSplit
        case "Punctuation":
            self = .punctuation(try SplitBehavior(json: json["behavior"], default: .isolated, file: file))
        default:
            throw TokenizerError(file: file, message: "unsupported pre_tokenizer type \"\(type)\"")
        }
    }

    func apply(_ pieces: [Piece]) -> [Piece] {
        switch self {
        case .sequence(let items):
            var p = pieces
            for item in items { p = item.apply(p) }
            return p
        default:
            var out: [Piece] = []
            out.reserveCapacity(pieces.count)
            for piece in pieces { applyOne(piece, into: &out) }
            return out
        }
    }

    private func emit(_ parts: [(text: String, offset: Int)], parent: Piece, into out: inout [Piece]) {
        for p in parts where !p.text.isEmpty {
            out.append(Piece(text: p.text, atStart: parent.atStart && p.offset == 0))
        }
    }

    private func applyOne(_ piece: Piece, into out: inout [Piece]) {
        switch self {
        case .sequence:
            out.append(contentsOf: apply([piece]))
        case .metaspace(let replacement, let scheme, let split):
            var text = piece.text
            if text.utf8.contains(0x20) {
                text = TextPattern.literal([0x20]).replaceAll(in: text, with: String(replacement))
            }
            let startsWithReplacement = text.unicodeScalars.first == replacement
            var prepended = false
            switch scheme {
            case .always: prepended = !startsWithReplacement
            case .first: prepended = !startsWithReplacement && piece.atStart
            case .never: break
            }
            if prepended { text = String(replacement) + text }
            if !split {
                if !text.isEmpty { out.append(Piece(text: text, atStart: piece.atStart)) }
                return
            }
            let segments = characterSegments(text) { $0 == replacement }
            let parts = SplitBehavior.mergedWithNext.apply(segments)
            // A prepended replacement maps to original offset 0 too.
            let shift = prepended ? String(replacement).utf8.count : 0
            for p in parts where !p.text.isEmpty {
                out.append(Piece(text: p.text, atStart: piece.atStart && p.offset <= shift))
            }
        case .byteLevel(let addPrefixSpace, let useRegex):
            var text = piece.text
            if addPrefixSpace && text.utf8.first != 0x20 { text = " " + text }
            if useRegex {
                let parts = SplitBehavior.isolated.apply(TextPattern.regex(PreTokenizer.gpt2Regex).segments(text))
                for p in parts where !p.text.isEmpty {
                    out.append(Piece(text: ByteLevelTable.encode(p.text), atStart: piece.atStart && p.offset == 0))
                }
            } else if !text.isEmpty {
                out.append(Piece(text: ByteLevelTable.encode(text), atStart: piece.atStart))
            }
        case .split(let pattern, let behavior, let invert):
            var segments = pattern.segments(piece.text)
            if invert { segments = segments.map { ($0.text, !$0.isMatch) } }
            emit(behavior.apply(segments), parent: piece, into: &out)
        case .digits(let individual):
            let segments = characterSegments(piece.text) { $0.isRustNumeric }
            emit((individual ? SplitBehavior.isolated : .contiguous).apply(segments), parent: piece, into: &out)
        case .whitespace:
            let segments = TextPattern.regex(PreTokenizer.whitespaceRegex).segments(piece.text)
                .map { ($0.text, !$0.isMatch) }
            emit(SplitBehavior.removed.apply(segments), parent: piece, into: &out)
        case .whitespaceSplit:
            let segments = characterSegments(piece.text) { $0.isRustWhitespace }
            emit(SplitBehavior.removed.apply(segments), parent: piece, into: &out)
        case .punctuation(let behavior):
            let segments = characterSegments(piece.text) { $0.isASCIIPunctuation || $0.isUnicodePunctuation }
            emit(behavior.apply(segments), parent: piece, into: &out)
        }
    }
}
