//! An HMAC of the raw body in one header: GitHub (`X-Hub-Signature-256`), Shopify
//! (`X-Shopify-Hmac-Sha256`) and the generic, configurable form.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use subtle::ConstantTimeEq;

use super::{decode_hex, header, Encoding, Headers, HmacAlgorithm, Rejection};

/// Where the signature is and how it is written.
pub struct Spec<'a> {
    pub header: &'a str,
    pub algorithm: HmacAlgorithm,
    pub encoding: Encoding,
    /// Text before the encoded MAC (`sha256=`), if any.
    pub prefix: &'a str,
}

/// HMAC of the concatenated `parts` under `key`.
pub fn mac(algorithm: HmacAlgorithm, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    match algorithm {
        HmacAlgorithm::Sha1 => run::<Hmac<sha1::Sha1>>(key, parts),
        HmacAlgorithm::Sha256 => run::<Hmac<sha2::Sha256>>(key, parts),
        HmacAlgorithm::Sha512 => run::<Hmac<sha2::Sha512>>(key, parts),
    }
}

/// HMAC (`M`, e.g. `Hmac<Sha256>`) of the concatenated `parts` under `key`.
pub(crate) fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    // HMAC takes keys of any length.
    let mut m = <M as hmac::digest::KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().to_vec()
}

/// Whether `given` (encoded, prefix already removed) is `expected`, in constant time.
pub(crate) fn matches(given: &str, encoding: Encoding, expected: &[u8]) -> bool {
    let decoded = match encoding {
        Encoding::Hex => decode_hex(given),
        Encoding::Base64 => B64.decode(given.trim()).ok(),
    };
    decoded.is_some_and(|d| bool::from(d.as_slice().ct_eq(expected)))
}

pub fn verify(spec: &Spec, key: &[u8], headers: &Headers, body: &[u8]) -> Result<(), Rejection> {
    let value = header(headers, spec.header).ok_or_else(|| Rejection::MissingHeader(spec.header.to_string()))?;
    let given = value
        .trim()
        .strip_prefix(spec.prefix)
        .filter(|given| written_one_way(given, spec.encoding))
        .ok_or_else(|| Rejection::Malformed(spec.header.to_string()))?;
    if matches(given, spec.encoding, &mac(spec.algorithm, key, &[body])) {
        Ok(())
    } else {
        Err(Rejection::SignatureMismatch)
    }
}

/// Whether an encoded MAC is written the one way its encoding allows: nothing around it, and
/// hex digits in one case. The signature header is the deduplication key the README advises
/// for providers whose signature has no timestamp (GitHub, the generic form): one signature
/// written many ways (a space after the prefix, its digits in mixed case) would pass as many
/// times. (Base64 decoding is strict already: no padding or trailing bits of another shape.)
fn written_one_way(given: &str, encoding: Encoding) -> bool {
    let hex_case = || {
        let (upper, lower) =
            (given.bytes().any(|b| b.is_ascii_uppercase()), given.bytes().any(|b| b.is_ascii_lowercase()));
        !(upper && lower)
    };
    given == given.trim() && (encoding != Encoding::Hex || hex_case())
}

/// GitHub: `X-Hub-Signature-256: sha256=<hex>`, keyed with the webhook's secret. GitHub
/// writes lower-case hex only, so only that is taken (one spelling for each signature).
pub fn github(secret: &str, headers: &Headers, body: &[u8]) -> Result<(), Rejection> {
    const SIGNATURE: &str = "x-hub-signature-256";
    if header(headers, SIGNATURE).is_some_and(|value| !super::lower_hex_after(value, "sha256=", 64)) {
        return Err(Rejection::Malformed(SIGNATURE.to_string()));
    }
    let spec = Spec { header: SIGNATURE, algorithm: HmacAlgorithm::Sha256, encoding: Encoding::Hex, prefix: "sha256=" };
    verify(&spec, secret.as_bytes(), headers, body)
}

/// Shopify: `X-Shopify-Hmac-Sha256: <base64>`, keyed with the app's client secret.
pub fn shopify(secret: &str, headers: &Headers, body: &[u8]) -> Result<(), Rejection> {
    let spec = Spec {
        header: "x-shopify-hmac-sha256",
        algorithm: HmacAlgorithm::Sha256,
        encoding: Encoding::Base64,
        prefix: "",
    };
    verify(&spec, secret.as_bytes(), headers, body)
}

#[cfg(test)]
mod tests {
    use super::super::tests::headers;
    use super::*;

    #[test]
    fn github_documented_example() {
        // The example in GitHub's "Validating webhook deliveries" guide.
        let h = headers(&[(
            "X-Hub-Signature-256",
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
        )]);
        assert_eq!(github("It's a Secret to Everybody", &h, b"Hello, World!"), Ok(()));
        // One spelling only (GitHub's): upper case or a space after the prefix is refused.
        for other in [
            "sha256=757107EA0EB2509FC211221CCE984B8A37570B6D7586C22C46F4379C8B043E17",
            "sha256= 757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
        ] {
            let h = headers(&[("X-Hub-Signature-256", other)]);
            let got = github("It's a Secret to Everybody", &h, b"Hello, World!");
            assert_eq!(got, Err(Rejection::Malformed("x-hub-signature-256".into())), "{other}");
        }
        assert_eq!(github("It's a Secret to Everybody", &h, b"Hello, World?"), Err(Rejection::SignatureMismatch));
        assert_eq!(github("another secret", &h, b"Hello, World!"), Err(Rejection::SignatureMismatch));
        assert_eq!(github("s", &headers(&[]), b""), Err(Rejection::MissingHeader("x-hub-signature-256".into())));
        let no_prefix = headers(&[("X-Hub-Signature-256", "757107ea")]);
        assert!(matches!(github("s", &no_prefix, b""), Err(Rejection::Malformed(_))));
    }

    #[test]
    fn shopify_base64() {
        // python3: base64.b64encode(hmac.new(b"shpss_secret", b'{"id":820982911946154508}',
        //          hashlib.sha256).digest())
        let h = headers(&[("X-Shopify-Hmac-Sha256", "jqbalbO3Z8mDmrF2/+wzM3KYvbgqzVBF969vgiIy80I=")]);
        assert_eq!(shopify("shpss_secret", &h, br#"{"id":820982911946154508}"#), Ok(()));
        assert_eq!(shopify("shpss_secret", &h, br#"{"id":820982911946154509}"#), Err(Rejection::SignatureMismatch));
        let garbage = headers(&[("X-Shopify-Hmac-Sha256", "not base64!")]);
        assert_eq!(shopify("shpss_secret", &garbage, b"{}"), Err(Rejection::SignatureMismatch));
    }

    #[test]
    fn generic_algorithms_and_encodings() {
        let body = br#"{"event":"ping"}"#;
        // python3: hmac.new(b"k", b'{"event":"ping"}', hashlib.sha1).hexdigest()
        let sha1 = Spec { header: "X-Sig", algorithm: HmacAlgorithm::Sha1, encoding: Encoding::Hex, prefix: "sha1=" };
        let h = headers(&[("x-sig", "sha1=3deb9bde8c3521480d804789dbe7bc396872a135")]);
        assert_eq!(verify(&sha1, b"k", &h, body), Ok(()));
        // Upper-case hex is the same MAC.
        let h = headers(&[("x-sig", "sha1=3DEB9BDE8C3521480D804789DBE7BC396872A135")]);
        assert_eq!(verify(&sha1, b"k", &h, body), Ok(()));
        // But one MAC is not taken written other ways (mixed case, spaces after the prefix):
        // deduplicated on this header, it would pass once per spelling.
        for other in ["sha1=3deb9bde8c3521480d804789dbe7bc396872A135", "sha1= 3deb9bde8c3521480d804789dbe7bc396872a135"]
        {
            let h = headers(&[("x-sig", other)]);
            assert_eq!(verify(&sha1, b"k", &h, body), Err(Rejection::Malformed("X-Sig".into())), "{other}");
        }
        // python3: base64.b64encode(hmac.new(b"k", b'{"event":"ping"}', hashlib.sha512).digest())
        let sha512 = Spec { header: "X-Sig", algorithm: HmacAlgorithm::Sha512, encoding: Encoding::Base64, prefix: "" };
        let h = headers(&[(
            "x-sig",
            "y9y1ZxYEhSwTU2wtRE07OwG1xObrHVLfqLpYw2G8P7gzcDC4SOI20V8+1uyQF1T8ZA7DvYkQ5FqrJU7gBIZ/VA==",
        )]);
        assert_eq!(verify(&sha512, b"k", &h, body), Ok(()));
        assert_eq!(verify(&sha512, b"K", &h, body), Err(Rejection::SignatureMismatch));
    }
}
