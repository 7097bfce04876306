import LoomCore
import Foundation

/// What the `post_processor` adds around a single sequence when `add_special_tokens` is true.
struct SpecialTokenWrap {
    var prefix: [Int] = []
    var suffix: [Int] = []

    init() {}

    init(json: JSON, file: String) throws {
        func fail(_ message: String) -> TokenizerError { TokenizerError(file: file, message: message) }
        guard let type = json["type"]?.stringValue else { throw fail("post_processor without a \"type\"") }
        switch type {
        case "TemplateProcessing":
            // special_tokens: {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}
            var specials: [String: [Int]] = [:]
            for (name, value) in json["special_tokens"]?.objectValue?.pairs ?? JSONObject().pairs {
                let ids = value["ids"]?.arrayValue?.compactMap { $0.intValue } ?? []
                specials[value["id"]?.stringValue ?? name] = ids
            }
            func idsOf(_ name: String) throws -> [Int] {
                guard let ids = specials[name] else {
                    throw fail("TemplateProcessing uses special token \"\(name)\" missing from its special_tokens")
                }
                return ids
            }
            var seenSequence = false
            func add(_ ids: [Int]) {
                if seenSequence { suffix += ids } else { prefix += ids }
            }
            if let items = json["single"]?.arrayValue {
                for item in items {
                    if let special = item["SpecialToken"] {
                        add(try idsOf(special["id"]?.stringValue ?? ""))
                    } else if item["Sequence"] != nil {
                        seenSequence = true
                    } else {
                        throw fail("TemplateProcessing: unknown template piece")
                    }
                }
            } else if let template = json["single"]?.stringValue {
                for word in template.split(separator: " ") where !word.isEmpty {
                    if word.hasPrefix("$") {
                        seenSequence = true
                    } else {
                        let name = word.split(separator: ":").first.map(String.init) ?? String(word)
                        add(try idsOf(name))
                    }
                }
            } else {
                throw fail("TemplateProcessing without a \"single\" template")
            }
        case "RobertaProcessing", "BertProcessing":
            guard let cls = json["cls"]?.arrayValue, cls.count == 2, let clsId = cls[1].intValue,
                let sep = json["sep"]?.arrayValue, sep.count == 2, let sepId = sep[1].intValue
            else { throw fail("\(type) needs \"cls\" and \"sep\" as [token, id]") }
            prefix = [clsId]
            suffix = [sepId]
        case "ByteLevel":
            break
        case "Sequence":
            for item in json["processors"]?.arrayValue ?? [] {
                let inner = try SpecialTokenWrap(json: item, file: file)
                prefix = inner.prefix + prefix
                suffix += inner.suffix
            }
        default:
            throw fail("unsupported post_processor type \"\(type)\"")
        }
    }
}
