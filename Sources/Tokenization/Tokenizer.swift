import LoomCore
import Foundation

/// A Hugging Face `tokenizer.json` tokenizer (BPE model: Metaspace/byte-fallback or byte-level),
/// giving the same ids and text as the `tokenizers` library.
///
/// tokenizer.json is the source of truth for encoding. tokenizer_config.json (and
/// special_tokens_map.json) name the BOS/EOS/PAD tokens; an explicit `add_bos_token` /
/// `add_eos_token` there adds or removes BOS/EOS around the post-processor's template, as
/// transformers' Llama tokenizers do. `legacy` needs no handling: it only changes how transformers
/// converts a sentencepiece model, and tokenizer.json already holds the result (for example
/// Metaspace with prepend_scheme "first" for `legacy: false`).
///
/// Immutable after init, so it can be shared between threads.
public final class Tokenizer: @unchecked Sendable {
    let model: BPEModel
    let normalizer: Normalizer?
    let preTokenizer: PreTokenizer?
    let decoder: TokenDecoder?
    let wrap: SpecialTokenWrap
    private let addedById: [Int: AddedToken]
    private let addedByContent: [[UInt8]: Int]
    private let addedDecodeStrings: [Int: String]
    private let skippedIds: Set<Int>
    private let rawMatcher: AddedTokenMatcher
    private let normalizedMatcher: AddedTokenMatcher

    /// Number of ids: the largest id of the vocabulary or the added tokens, plus one.
    public let vocabSize: Int
    public let bosTokenId: Int?
    public let eosTokenId: Int?
    public let padTokenId: Int?
    public let unkTokenId: Int?
    /// The ids the post-processor puts before / after the text for `addSpecialTokens: true`.
    public var prefixTokenIds: [Int] { wrap.prefix }
    public var suffixTokenIds: [Int] { wrap.suffix }

    /// Loads `tokenizer.json` and, if present, `tokenizer_config.json` and `special_tokens_map.json`
    /// from `directory` (a path to a tokenizer.json file is accepted too).
    public convenience init(directory: URL) throws {
        var isDirectory: ObjCBool = false
        var directory = directory
        var jsonURL = directory.appendingPathComponent("tokenizer.json")
        if FileManager.default.fileExists(atPath: directory.path, isDirectory: &isDirectory), !isDirectory.boolValue {
            jsonURL = directory
            directory = directory.deletingLastPathComponent()
        }
        guard FileManager.default.fileExists(atPath: jsonURL.path) else {
            throw TokenizerError(file: jsonURL.path, message: "file not found")
        }
        let data: Data
        do {
            data = try Data(contentsOf: jsonURL)
        } catch {
            throw TokenizerError(file: jsonURL.path, message: "cannot be read: \(error.localizedDescription)")
        }
        func optional(_ name: String) throws -> Data? {
            let url = directory.appendingPathComponent(name)
            guard FileManager.default.fileExists(atPath: url.path) else { return nil }
            do {
                return try Data(contentsOf: url)
            } catch {
                throw TokenizerError(file: url.path, message: "cannot be read: \(error.localizedDescription)")
            }
        }
        let configURL = directory.appendingPathComponent("tokenizer_config.json")
        let mapURL = directory.appendingPathComponent("special_tokens_map.json")
        try self.init(
            tokenizerJSON: data, config: try optional("tokenizer_config.json"),
            specialTokensMap: try optional("special_tokens_map.json"),
            names: (jsonURL.path, configURL.path, mapURL.path))
    }

    /// Builds a tokenizer from the contents of tokenizer.json and, optionally, tokenizer_config.json.
    public convenience init(tokenizerJSON: Data, config: Data?) throws {
        try self.init(
            tokenizerJSON: tokenizerJSON, config: config, specialTokensMap: nil,
            names: ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"))
    }

    /// A tokenizer file's top-level object. A leading UTF-8 byte-order mark is skipped, as the
    /// tokenizers library does.
    static func parseObject(_ data: Data, file: String) throws -> JSONObject {
        let body = data.starts(with: [0xEF, 0xBB, 0xBF]) ? Data(data.dropFirst(3)) : data
        do {
            guard let object = try JSON.parse(body).objectValue else { throw TokenizerError(file: file, message: "not a JSON object") }
            return object
        } catch let e as JSONSyntaxError {
            throw TokenizerError(file: file, message: "malformed JSON at byte \(e.offset): \(e.reason)")
        }
    }

    init(
        tokenizerJSON: Data, config configData: Data?, specialTokensMap mapData: Data?,
        names: (json: String, config: String, map: String)
    ) throws {
        let file = names.json
        func fail(_ message: String) -> TokenizerError { TokenizerError(file: file, message: message) }

        let root = try Self.parseObject(tokenizerJSON, file: file)

        // Model
        guard let modelObject = root["model"]?.objectValue else { throw fail("no \"model\" object") }
        let modelType = modelObject["type"]?.stringValue ?? (modelObject.contains("merges") ? "BPE" : "unknown")
        guard modelType == "BPE" else {
            throw fail("unsupported model type \"\(modelType)\" (only BPE tokenizers are supported)")
        }
        let model = try BPEModel(json: modelObject, file: file)
        self.model = model

        // Pipeline
        func optionalPart<T>(_ key: String, _ make: (JSON) throws -> T) throws -> T? {
            guard let v = root[key], !v.isNull else { return nil }
            return try make(v)
        }
        normalizer = try optionalPart("normalizer") { try Normalizer(json: $0, file: file) }
        preTokenizer = try optionalPart("pre_tokenizer") { try PreTokenizer(json: $0, file: file) }
        decoder = try optionalPart("decoder") { try TokenDecoder(json: $0, file: file) }
        var wrapping = try optionalPart("post_processor") { try SpecialTokenWrap(json: $0, file: file) } ?? SpecialTokenWrap()

        // Added tokens
        var added: [AddedToken] = []
        for (i, item) in (root["added_tokens"]?.arrayValue ?? []).enumerated() {
            guard let id = item["id"]?.intValue, id >= 0, let content = item["content"]?.stringValue else {
                throw fail("added_tokens[\(i)] needs an \"id\" and a \"content\"")
            }
            let special = item["special"]?.boolValue ?? false
            added.append(AddedToken(
                id: id, content: content, special: special,
                singleWord: item["single_word"]?.boolValue ?? false,
                lstrip: item["lstrip"]?.boolValue ?? false,
                rstrip: item["rstrip"]?.boolValue ?? false,
                normalized: item["normalized"]?.boolValue ?? !special))
        }
        var addedById: [Int: AddedToken] = [:]
        var addedByContent: [[UInt8]: Int] = [:]
        var addedDecodeStrings: [Int: String] = [:]
        for t in added where !t.content.isEmpty {
            addedById[t.id] = t
            addedByContent[Array(t.content.utf8)] = t.id
            // Like `tokenizers`, a normalized added token decodes as its normalized form.
            if t.normalized, let normalizer {
                let normed = normalizer.apply(t.content)
                if !identical(normed, t.content) { addedDecodeStrings[t.id] = normed }
            }
        }
        self.addedById = addedById
        self.addedByContent = addedByContent
        self.addedDecodeStrings = addedDecodeStrings

        // decode(skip_special_tokens) drops the ids whose token string is the content of a special
        // added token (checked by string, as `tokenizers` does).
        let specialContents = Set(added.filter { $0.special && !$0.content.isEmpty }.map { Array($0.content.utf8) })
        var skippedIds = Set<Int>()
        for t in added where !t.content.isEmpty {
            if specialContents.contains(Array((addedDecodeStrings[t.id] ?? t.content).utf8)) { skippedIds.insert(t.id) }
        }
        for c in specialContents {
            if let modelId = model.vocab[c], addedById[modelId] == nil { skippedIds.insert(modelId) }
        }
        self.skippedIds = skippedIds

        // Matching order: special tokens first, then the others (as `tokenizers` builds its tries).
        let ordered = added.filter { $0.special } + added.filter { !$0.special }
        let normalizer = self.normalizer
        rawMatcher = AddedTokenMatcher(tokens: ordered.filter { !$0.normalized }.map { ($0.content, $0) })
        normalizedMatcher = AddedTokenMatcher(tokens: ordered.filter { $0.normalized }.map {
            (normalizer?.apply($0.content) ?? $0.content, $0)
        })

        vocabSize = max(model.maxId, added.map(\.id).max() ?? -1) + 1

        // tokenizer_config.json / special_tokens_map.json
        let config = try configData.map { try Self.parseObject($0, file: names.config) }
        let map = try mapData.map { try Self.parseObject($0, file: names.map) }

        func lookup(_ name: String) -> Int? {
            if let id = addedByContent[Array(name.utf8)] { return id }
            return model.tokenToId(name)
        }
        /// .some(id or nil) when the key is present (null means "none"), nil when absent.
        func configured(_ key: String) -> Int?? {
            for source in [config, map] {
                guard let value = source?[key] else { continue }
                if value.isNull { return .some(nil) }
                if let s = value.stringValue { return .some(lookup(s)) }
                if let s = value["content"]?.stringValue { return .some(lookup(s)) }
                return .some(nil)
            }
            return nil
        }
        func firstExisting(_ names: [String]) -> Int? {
            for n in names { if let id = lookup(n) { return id } }
            return nil
        }

        let bos: Int? = configured("bos_token") ?? (wrapping.prefix.first ?? firstExisting(["<s>", "<|begin_of_text|>", "<bos>"]))
        let eos: Int? = configured("eos_token")
            ?? firstExisting(["</s>", "<|end_of_text|>", "<|endoftext|>", "<|im_end|>", "<eos>"])
        bosTokenId = bos
        eosTokenId = eos
        padTokenId = configured("pad_token") ?? nil
        unkTokenId = configured("unk_token")
            ?? modelObject["unk_token"]?.stringValue.flatMap { lookup($0) }

        if let addBos = config?["add_bos_token"]?.boolValue, let bos {
            if addBos && wrapping.prefix.first != bos { wrapping.prefix.insert(bos, at: 0) }
            if !addBos && wrapping.prefix.first == bos { wrapping.prefix.removeFirst() }
        }
        if let addEos = config?["add_eos_token"]?.boolValue, let eos {
            if addEos && wrapping.suffix.last != eos { wrapping.suffix.append(eos) }
            if !addEos && wrapping.suffix.last == eos { wrapping.suffix.removeLast() }
        }
        self.wrap = wrapping
    }

    // MARK: - Vocabulary

    /// Whether `id` is a special added token (or a token that `decode(skipSpecialTokens: true)` drops).
    public func isSpecial(_ id: Int) -> Bool {
        if let t = addedById[id], t.special { return true }
        return skippedIds.contains(id)
    }

    public func tokenId(for token: String) -> Int? {
        if let id = addedByContent[Array(token.utf8)] { return id }
        return model.tokenToId(token)
    }

    public func token(for id: Int) -> String? {
        if let t = addedById[id] { return t.content }
        return model.idToTokenString(id)
    }

    // MARK: - Encoding

    /// The ids of `text`, as `tokenizers`' `encode(text, add_special_tokens=...)`.
    public func encode(_ text: String, addSpecialTokens: Bool = true) -> [Int] {
        var ids: [Int] = []
        ids.reserveCapacity(text.utf8.count / 3 + 4)
        if addSpecialTokens { ids.append(contentsOf: wrap.prefix) }
        for segment in rawMatcher.split(text) {
            switch segment {
            case .token(let id):
                ids.append(id)
            case .text(let raw, let offset):
                let normalized = normalizer?.apply(raw) ?? raw
                for inner in normalizedMatcher.split(normalized) {
                    switch inner {
                    case .token(let id):
                        ids.append(id)
                    case .text(let t, let innerOffset):
                        let piece = Piece(text: t, atStart: offset == 0 && innerOffset == 0)
                        if let preTokenizer {
                            for word in preTokenizer.apply([piece]) { model.tokenize(word.text, into: &ids) }
                        } else {
                            model.tokenize(piece.text, into: &ids)
                        }
                    }
                }
            }
        }
        if addSpecialTokens { ids.append(contentsOf: wrap.suffix) }
        return ids
    }

    // MARK: - Decoding

    /// The text of `ids`, as `tokenizers`' `decode(ids, skip_special_tokens=...)`. Unknown ids are
    /// ignored.
    public func decode(_ ids: [Int], skipSpecialTokens: Bool = true) -> String {
        decode(ids[...], skipSpecialTokens: skipSpecialTokens)
    }

    public func decode(_ ids: ArraySlice<Int>, skipSpecialTokens: Bool = true) -> String {
        var tokens: [String] = []
        tokens.reserveCapacity(ids.count)
        for id in ids {
            if skipSpecialTokens && skippedIds.contains(id) { continue }
            if let t = addedDecodeStrings[id] ?? token(for: id) { tokens.append(t) }
        }
        if let decoder { return decoder.decode(tokens) }
        return tokens.joined(separator: " ")
    }
}
