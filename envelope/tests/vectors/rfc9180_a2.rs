//! RFC 9180 Appendix A.2 test vectors: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256,
//! ChaCha20Poly1305 — the suite the envelopes use. Transcribed from the RFC;
//! every mode is checked end to end through the `hpke` crate's public API:
//! key derivation from ikm, encapsulation with the RFC's ephemeral ikm, the
//! sealed ciphertexts at each sequence number, and the exported values.

#![allow(dead_code)]

pub struct Vector {
    pub name: &'static str,
    pub mode: u8,
    pub ikm_e: &'static str,
    pub pk_em: &'static str,
    pub ikm_r: &'static str,
    pub pk_rm: &'static str,
    pub sk_rm: &'static str,
    pub ikm_s: Option<&'static str>,
    pub pk_sm: Option<&'static str>,
    pub sk_sm: Option<&'static str>,
    pub psk: Option<(&'static str, &'static str)>,
    pub enc: &'static str,
    /// (sequence number, ciphertext)
    pub encryptions: &'static [(u64, &'static str)],
    /// (exporter context, 32-byte exported value)
    pub exports: [(&'static str, &'static str); 3],
}

pub const INFO: &str = "4f6465206f6e2061204772656369616e2055726e";
pub const PT: &str = "4265617574792069732074727574682c20747275746820626561757479";
const PSK: (&str, &str) = (
    "0247fd33b913760fa1fa51e1892d9f307fbe65eb171e8132c2af18555a738b82",
    "456e6e796e20447572696e206172616e204d6f726961",
);

pub const VECTORS: &[Vector] = &[
    Vector {
        name: "A.2.1 Base",
        mode: 0,
        ikm_e: "909a9b35d3dc4713a5e72a4da274b55d3d3821a37e5d099e74a647db583a904b",
        pk_em: "1afa08d3dec047a643885163f1180476fa7ddb54c6a8029ea33f95796bf2ac4a",
        ikm_r: "1ac01f181fdf9f352797655161c58b75c656a6cc2716dcb66372da835542e1df",
        pk_rm: "4310ee97d88cc1f088a5576c77ab0cf5c3ac797f3d95139c6c84b5429c59662a",
        sk_rm: "8057991eef8f1f1af18f4a9491d16a1ce333f695d4db8e38da75975c4478e0fb",
        ikm_s: None,
        pk_sm: None,
        sk_sm: None,
        psk: None,
        enc: "1afa08d3dec047a643885163f1180476fa7ddb54c6a8029ea33f95796bf2ac4a",
        encryptions: &[
            (
                0,
                "1c5250d8034ec2b784ba2cfd69dbdb8af406cfe3ff938e131f0def8c8b60b4db21993c62ce81883d2dd1b51a28",
            ),
            (
                1,
                "6b53c051e4199c518de79594e1c4ab18b96f081549d45ce015be002090bb119e85285337cc95ba5f59992dc98c",
            ),
            (
                2,
                "71146bd6795ccc9c49ce25dda112a48f202ad220559502cef1f34271e0cb4b02b4f10ecac6f48c32f878fae86b",
            ),
            (
                4,
                "63357a2aa291f5a4e5f27db6baa2af8cf77427c7c1a909e0b37214dd47db122bb153495ff0b02e9e54a50dbe16",
            ),
            (
                255,
                "18ab939d63ddec9f6ac2b60d61d36a7375d2070c9b683861110757062c52b8880a5f6b3936da9cd6c23ef2a95c",
            ),
            (
                256,
                "7a4a13e9ef23978e2c520fd4d2e757514ae160cd0cd05e556ef692370ca53076214c0c40d4c728d6ed9e727a5b",
            ),
        ],
        exports: [
            (
                "",
                "4bbd6243b8bb54cec311fac9df81841b6fd61f56538a775e7c80a9f40160606e",
            ),
            (
                "00",
                "8c1df14732580e5501b00f82b10a1647b40713191b7c1240ac80e2b68808ba69",
            ),
            (
                "54657374436f6e74657874",
                "5acb09211139c43b3090489a9da433e8a30ee7188ba8b0a9a1ccf0c229283e53",
            ),
        ],
    },
    Vector {
        name: "A.2.2 PSK",
        mode: 1,
        ikm_e: "35706a0b09fb26fb45c39c2f5079c709c7cf98e43afa973f14d88ece7e29c2e3",
        pk_em: "2261299c3f40a9afc133b969a97f05e95be2c514e54f3de26cbe5644ac735b04",
        ikm_r: "26b923eade72941c8a85b09986cdfa3f1296852261adedc52d58d2930269812b",
        pk_rm: "13640af826b722fc04feaa4de2f28fbd5ecc03623b317834e7ff4120dbe73062",
        sk_rm: "77d114e0212be51cb1d76fa99dd41cfd4d0166b08caa09074430a6c59ef17879",
        ikm_s: None,
        pk_sm: None,
        sk_sm: None,
        psk: Some(PSK),
        enc: "2261299c3f40a9afc133b969a97f05e95be2c514e54f3de26cbe5644ac735b04",
        encryptions: &[
            (
                0,
                "4a177f9c0d6f15cfdf533fb65bf84aecdc6ab16b8b85b4cf65a370e07fc1d78d28fb073214525276f4a89608ff",
            ),
            (
                1,
                "5c3cabae2f0b3e124d8d864c116fd8f20f3f56fda988c3573b40b09997fd6c769e77c8eda6cda4f947f5b704a8",
            ),
            (
                2,
                "14958900b44bdae9cbe5a528bf933c5c990dbb8e282e6e495adf8205d19da9eb270e3a6f1e0613ab7e757962a4",
            ),
            (
                4,
                "c2a7bc09ddb853cf2effb6e8d058e346f7fe0fb3476528c80db6b698415c5f8c50b68a9a355609e96d2117f8d3",
            ),
            (
                255,
                "2414d0788e4bc39a59a26d7bd5d78e111c317d44c37bd5a4c2a1235f2ddc2085c487d406490e75210c958724a7",
            ),
            (
                256,
                "c567ae1c3f0f75abe1dd9e4532b422600ed4a6e5b9484dafb1e43ab9f5fd662b28c00e2e81d3cde955dae7e218",
            ),
        ],
        exports: [
            (
                "",
                "813c1bfc516c99076ae0f466671f0ba5ff244a41699f7b2417e4c59d46d39f40",
            ),
            (
                "00",
                "2745cf3d5bb65c333658732954ee7af49eb895ce77f8022873a62a13c94cb4e1",
            ),
            (
                "54657374436f6e74657874",
                "ad40e3ae14f21c99bfdebc20ae14ab86f4ca2dc9a4799d200f43a25f99fa78ae",
            ),
        ],
    },
    Vector {
        name: "A.2.3 Auth",
        mode: 2,
        ikm_e: "938d3daa5a8904540bc24f48ae90eed3f4f7f11839560597b55e7c9598c996c0",
        pk_em: "f7674cc8cd7baa5872d1f33dbaffe3314239f6197ddf5ded1746760bfc847e0e",
        ikm_r: "64835d5ee64aa7aad57c6f2e4f758f7696617f8829e70bc9ac7a5ef95d1c756c",
        pk_rm: "1a478716d63cb2e16786ee93004486dc151e988b34b475043d3e0175bdb01c44",
        sk_rm: "3ca22a6d1cda1bb9480949ec5329d3bf0b080ca4c45879c95eddb55c70b80b82",
        ikm_s: Some("9d8f94537d5a3ddef71234c0baedfad4ca6861634d0b94c3007fed557ad17df6"),
        pk_sm: Some("f0f4f9e96c54aeed3f323de8534fffd7e0577e4ce269896716bcb95643c8712b"),
        sk_sm: Some("2def0cb58ffcf83d1062dd085c8aceca7f4c0c3fd05912d847b61f3e54121f05"),
        psk: None,
        enc: "f7674cc8cd7baa5872d1f33dbaffe3314239f6197ddf5ded1746760bfc847e0e",
        encryptions: &[
            (
                0,
                "ab1a13c9d4f01a87ec3440dbd756e2677bd2ecf9df0ce7ed73869b98e00c09be111cb9fdf077347aeb88e61bdf",
            ),
            (
                1,
                "3265c7807ffff7fdace21659a2c6ccffee52a26d270c76468ed74202a65478bfaedfff9c2b7634e24f10b71016",
            ),
            (
                2,
                "3aadee86ad2a05081ea860033a9d09dbccb4acac2ded0891da40f51d4df19925f7a767b076a5cbc9355c8fd35e",
            ),
            (
                4,
                "502ecccd5c2be3506a081809cc58b43b94f77cbe37b8b31712d9e21c9e61aa6946a8e922f54eae630f88eb8033",
            ),
            (
                255,
                "652e597ba20f3d9241cda61f33937298b1169e6adf72974bbe454297502eb4be132e1c5064702fc165c2ddbde8",
            ),
            (
                256,
                "3be14e8b3bbd1028cf2b7d0a691dbbeff71321e7dec92d3c2cfb30a0994ab246af76168480285a60037b4ba13a",
            ),
        ],
        exports: [
            (
                "",
                "070cffafd89b67b7f0eeb800235303a223e6ff9d1e774dce8eac585c8688c872",
            ),
            (
                "00",
                "2852e728568d40ddb0edde284d36a4359c56558bb2fb8837cd3d92e46a3a14a8",
            ),
            (
                "54657374436f6e74657874",
                "1df39dc5dd60edcbf5f9ae804e15ada66e885b28ed7929116f768369a3f950ee",
            ),
        ],
    },
    Vector {
        name: "A.2.4 AuthPSK",
        mode: 3,
        ikm_e: "49d6eac8c6c558c953a0a252929a818745bb08cd3d29e15f9f5db5eb2e7d4b84",
        pk_em: "656a2e00dc9990fd189e6e473459392df556e9a2758754a09db3f51179a3fc02",
        ikm_r: "f3304ddcf15848488271f12b75ecaf72301faabf6ad283654a14c398832eb184",
        pk_rm: "a5099431c35c491ec62ca91df1525d6349cb8aa170c51f9581f8627be6334851",
        sk_rm: "7b36a42822e75bf3362dfabbe474b3016236408becb83b859a6909e22803cb0c",
        ikm_s: Some("20ade1d5203de1aadfb261c4700b6432e260d0d317be6ebbb8d7fffb1f86ad9d"),
        pk_sm: Some("3ac5bd4dd66ff9f2740bef0d6ccb66daa77bff7849d7895182b07fb74d087c45"),
        sk_sm: Some("90761c5b0a7ef0985ed66687ad708b921d9803d51637c8d1cb72d03ed0f64418"),
        psk: Some(PSK),
        enc: "656a2e00dc9990fd189e6e473459392df556e9a2758754a09db3f51179a3fc02",
        encryptions: &[
            (
                0,
                "9aa52e29274fc6172e38a4461361d2342585d3aeec67fb3b721ecd63f059577c7fe886be0ede01456ebc67d597",
            ),
            (
                1,
                "59460bacdbe7a920ef2806a74937d5a691d6d5062d7daafcad7db7e4d8c649adffe575c1889c5c2e3a49af8e3e",
            ),
            (
                2,
                "5688ff6a03ba26ae936044a5c800f286fb5d1eccdd2a0f268f6ff9773b51169318d1a1466bb36263415071db00",
            ),
            (
                4,
                "d936b7a01f5c7dc4c3dc04e322cc694684ee18dd71719196874e5235aed3cfb06cadcd3bc7da0877488d7c551d",
            ),
            (
                255,
                "4d4c462f7b9b637eaf1f4e15e325b7bc629c0af6e3073422c86064cc3c98cff87300f054fd56dd57dc34358beb",
            ),
            (
                256,
                "9b7f84224922d2a9edd7b2c2057f3bcf3a547f17570575e626202e593bfdd99e9878a1af9e41ded58c7fb77d2f",
            ),
        ],
        exports: [
            (
                "",
                "c23ebd4e7a0ad06a5dddf779f65004ce9481069ce0f0e6dd51a04539ddcbd5cd",
            ),
            (
                "00",
                "ed7ff5ca40a3d84561067ebc8e01702bc36cf1eb99d42a92004642b9dfaadd37",
            ),
            (
                "54657374436f6e74657874",
                "d3bae066aa8da27d527d85c040f7dd6ccb60221c902ee36a82f70bcd62a60ee4",
            ),
        ],
    },
];
