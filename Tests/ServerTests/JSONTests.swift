import Foundation
import Testing

@testable import Server

@Suite struct JSONTests {
    @Test func parsesEveryKindOfValue() throws {
        let j = try JSON.parse(#" {"a": [1, -2, 3.5, 1e3, -0.25E-2, true, false, null], "s": "q\"\\\/\n\t\u00e9\ud83d\ude00", "o": {}} "#)
        #expect(j["a"] == [1, -2, 3.5, 1000.0, -0.0025, true, false, nil])
        #expect(j["s"]?.stringValue == "q\"\\/\n\té😀")
        #expect(j["o"] == .object([:]))
        #expect(j.objectValue?.keys == ["a", "s", "o"])
        #expect(try JSON.parse("9007199254740993") == .int(9_007_199_254_740_993))
        #expect(try JSON.parse("3.0").intValue == 3)
        #expect(try JSON.parse("3.5").intValue == nil)
    }

    @Test func rejectsMalformedText() {
        for bad in ["", "{", "[1,]", "{\"a\" 1}", "tru", "\"abc", "{\"a\":1} x", "[\"\u{01}\"]", "{'a': 1}", "-", "\"\\x\""] {
            #expect(throws: JSONSyntaxError.self, "\(bad)") { try JSON.parse(bad) }
        }
    }

    @Test func serializesCompactlyInKeyOrder() {
        let j: JSON = ["z": 1, "a": [1.5, 0.1, 1e-5, .double(.nan)], "t": "é\u{01}\"\n", "n": nil, "b": false]
        #expect(j.text == #"{"z":1,"a":[1.5,0.1,1e-05,null],"t":"é\u0001\"\n","n":null,"b":false}"#)
        #expect(JSON(Float(-0.5)).text == "-0.5")
    }

    @Test func roundTrips() throws {
        let j: JSON = ["text": "Once upon a time 🐱", "ids": [1, 2, 3], "meta": ["x": -1.25, "y": [nil, true]]]
        #expect(try JSON.parse(j.serialized()) == j)
    }
}
