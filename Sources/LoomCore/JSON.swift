import Foundation

/// A JSON value with ordered object keys: requests are read into it (so a field can be a string
/// *or* a list, as SGLang's API allows) and responses are written from it in a stable key order.
public enum JSON: Sendable, Hashable {
    case null
    case bool(Bool)
    case int(Int)
    case double(Double)
    case string(String)
    case array([JSON])
    case object(JSONObject)

    public var isNull: Bool { self == .null }
    public var stringValue: String? { if case .string(let s) = self { s } else { nil } }
    public var boolValue: Bool? { if case .bool(let b) = self { b } else { nil } }
    public var arrayValue: [JSON]? { if case .array(let a) = self { a } else { nil } }
    public var objectValue: JSONObject? { if case .object(let o) = self { o } else { nil } }

    /// An integer, also from a float with no fractional part (`3.0`), as pydantic accepts.
    public var intValue: Int? {
        switch self {
        case .int(let i): i
        case .double(let d) where d == d.rounded() && abs(d) < 9e15: Int(d)
        default: nil
        }
    }

    public var doubleValue: Double? {
        switch self {
        case .int(let i): Double(i)
        case .double(let d): d
        default: nil
        }
    }

    /// The value of `key` when this is an object (nil otherwise or when absent).
    public subscript(key: String) -> JSON? { objectValue?[key] }

    /// What a value is, in JSON words, for error messages.
    public var kindDescription: String {
        switch self {
        case .null: "null"
        case .bool: "a boolean"
        case .int, .double: "a number"
        case .string: "a string"
        case .array: "a list"
        case .object: "an object"
        }
    }
}

/// A JSON object that keeps its keys in insertion order, byte for byte.
///
/// Keys compare by their UTF-8 bytes, not by Swift's canonical equivalence ("é" == "e\u{301}"), so a
/// tokenizer vocabulary never merges two distinct entries. Lookups are linear: objects are small
/// request bodies and configs; large ones (vocabularies) are read through `pairs`.
public struct JSONObject: Sendable, Hashable, ExpressibleByDictionaryLiteral {
    public private(set) var keys: [String] = []
    public private(set) var values: [JSON] = []

    public init() {}

    public init(dictionaryLiteral elements: (String, JSON)...) {
        for (k, v) in elements { self[k] = v }
    }

    /// The last value stored under `key`.
    public subscript(key: String) -> JSON? {
        get { index(of: key).map { values[$0] } }
        set {
            if let newValue {
                if let i = index(of: key) { values[i] = newValue } else { append(key, newValue) }
            } else if let i = index(of: key) {
                keys.remove(at: i)
                values.remove(at: i)
            }
        }
    }

    /// Adds a pair without looking for an existing key (the parser's path).
    public mutating func append(_ key: String, _ value: JSON) {
        keys.append(key)
        values.append(value)
    }

    public func contains(_ key: String) -> Bool { index(of: key) != nil }

    private func index(of key: String) -> Int? {
        keys.lastIndex { $0.utf8.elementsEqual(key.utf8) }
    }

    public var pairs: [(key: String, value: JSON)] { zip(keys, values).map { ($0, $1) } }
    public var isEmpty: Bool { keys.isEmpty }
}

extension JSON: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByBooleanLiteral,
    ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral, ExpressibleByNilLiteral, ExpressibleByFloatLiteral
{
    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int) { self = .int(value) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(floatLiteral value: Double) { self = .double(value) }
    public init(arrayLiteral elements: JSON...) { self = .array(elements) }
    public init(dictionaryLiteral elements: (String, JSON)...) {
        var o = JSONObject()
        for (k, v) in elements { o[k] = v }
        self = .object(o)
    }
    public init(nilLiteral: ()) { self = .null }

    public init(_ value: String?) { self = value.map { .string($0) } ?? .null }
    public init(_ value: Int?) { self = value.map { .int($0) } ?? .null }
    public init(_ value: Double?) { self = value.map { .double($0) } ?? .null }
    public init(_ value: Float?) { self = value.map { .double(Double($0)) } ?? .null }
    public init(_ values: [Int]) { self = .array(values.map { .int($0) }) }
    public init(_ values: [String]) { self = .array(values.map { .string($0) }) }
}
