// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {Fixture} from "./utils/Fixture.sol";
import {ProductBank} from "../src/ProductBank.sol";
import {IProductBank} from "../src/interfaces/IProductBank.sol";
import {Reward} from "../src/interfaces/IMultiTokenPushPull.sol";
import {TestToken} from "../src/mocks/TestToken.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";

/// @dev Signature security of ProductBank.pushRewards.
contract SignatureTest is Fixture {
    address internal constant ALICE = address(0xA1);
    address internal constant BOB = address(0xB0B);

    Reward[] internal batch;
    bytes32 internal nonce = keccak256("batch-1");
    uint256 internal deadline;
    bytes internal sig;

    function setUp() public override {
        super.setUp();
        _fund(1000e18);
        _allocate(bank, CAMPAIGN, address(token), 0);
        batch.push(Reward(ALICE, 5e18));
        batch.push(Reward(BOB, 7e18));
        deadline = block.timestamp + 1 days;
        sig = _sign(DISTRIBUTOR_KEY, address(bank), CAMPAIGN, address(token), batch, nonce, deadline);
    }

    function _signer(bytes32 campaignId, address tok, Reward[] memory r, bytes32 n, uint256 d, bytes memory s)
        internal
        view
        returns (address)
    {
        return ECDSA.recover(bank.hashPushRewards(campaignId, tok, r, n, d), s);
    }

    function _expectUnauthorized(address signer) internal {
        vm.expectRevert(abi.encodeWithSelector(IProductBank.UnauthorizedSigner.selector, signer));
    }

    function test_valid_batchIsAccepted() public {
        bank.pushRewards(CAMPAIGN, address(token), batch, nonce, deadline, sig);
        assertEq(pushPull.getPendingAmount(address(token), ALICE), 5e18);
    }

    function test_replay_sameBatchReverts() public {
        bank.pushRewards(CAMPAIGN, address(token), batch, nonce, deadline, sig);
        vm.expectRevert(abi.encodeWithSelector(IProductBank.NonceAlreadyUsed.selector, nonce));
        bank.pushRewards(CAMPAIGN, address(token), batch, nonce, deadline, sig);
        assertEq(pushPull.getPendingAmount(address(token), ALICE), 5e18);
    }

    function test_replay_onAnotherBankReverts() public {
        ProductBank other = _newBank(keccak256("other.example.com"));
        token.approve(address(other), type(uint256).max);
        other.deposit(address(token), 1000e18);
        _allocate(other, CAMPAIGN, address(token), 0);
        address recovered = ECDSA.recover(
            _digest(address(other), CAMPAIGN, address(token), batch, nonce, deadline), sig
        );
        _expectUnauthorized(recovered);
        other.pushRewards(CAMPAIGN, address(token), batch, nonce, deadline, sig);
    }

    function test_replay_onAnotherChainReverts() public {
        vm.chainId(block.chainid + 1);
        address recovered = _signer(CAMPAIGN, address(token), batch, nonce, deadline, sig);
        assertTrue(recovered != distributor);
        _expectUnauthorized(recovered);
        bank.pushRewards(CAMPAIGN, address(token), batch, nonce, deadline, sig);
    }

    function test_deadline_inclusiveThenExpired() public {
        vm.warp(deadline); // still valid at the deadline itself
        bank.pushRewards(CAMPAIGN, address(token), batch, nonce, deadline, sig);

        bytes32 n2 = keccak256("batch-2");
        bytes memory s2 = _sign(DISTRIBUTOR_KEY, address(bank), CAMPAIGN, address(token), batch, n2, deadline);
        vm.warp(deadline + 1);
        vm.expectRevert(abi.encodeWithSelector(IProductBank.SignatureExpired.selector, deadline));
        bank.pushRewards(CAMPAIGN, address(token), batch, n2, deadline, s2);
        assertFalse(bank.isNonceUsed(n2)); // provably dead: can be re-signed safely
    }

    function test_malleableHighSSignatureReverts() public {
        (uint8 v, bytes32 r, bytes32 s) =
            vm.sign(DISTRIBUTOR_KEY, _digest(address(bank), CAMPAIGN, address(token), batch, nonce, deadline));
        bytes memory flipped = abi.encodePacked(r, bytes32(SECP256K1_N - uint256(s)), v == 27 ? uint8(28) : uint8(27));
        vm.expectRevert(IProductBank.InvalidSignature.selector);
        bank.pushRewards(CAMPAIGN, address(token), batch, nonce, deadline, flipped);
    }

    function test_malformedSignaturesRevert() public {
        vm.expectRevert(IProductBank.InvalidSignature.selector);
        bank.pushRewards(CAMPAIGN, address(token), batch, nonce, deadline, "");
        vm.expectRevert(IProductBank.InvalidSignature.selector);
        bank.pushRewards(CAMPAIGN, address(token), batch, nonce, deadline, abi.encodePacked(sig, uint8(0)));
        vm.expectRevert(IProductBank.InvalidSignature.selector);
        bank.pushRewards(CAMPAIGN, address(token), batch, nonce, deadline, new bytes(65)); // recovers to 0
    }

    function test_nonDistributorSignerReverts() public {
        bytes memory s = _sign(STRANGER_KEY, address(bank), CAMPAIGN, address(token), batch, nonce, deadline);
        _expectUnauthorized(stranger);
        bank.pushRewards(CAMPAIGN, address(token), batch, nonce, deadline, s);
        // the owner is not a distributor either
        s = _sign(OWNER_KEY, address(bank), CAMPAIGN, address(token), batch, nonce, deadline);
        _expectUnauthorized(owner);
        bank.pushRewards(CAMPAIGN, address(token), batch, nonce, deadline, s);
    }

    function test_revokedDistributorReverts() public {
        bytes32 role = bank.DISTRIBUTOR_ROLE();
        vm.prank(owner);
        bank.revokeRole(role, distributor);
        _expectUnauthorized(distributor);
        bank.pushRewards(CAMPAIGN, address(token), batch, nonce, deadline, sig);
    }

    function test_tampered_amount() public {
        Reward[] memory r = batch;
        r[1].amount += 1;
        _expectUnauthorized(_signer(CAMPAIGN, address(token), r, nonce, deadline, sig));
        bank.pushRewards(CAMPAIGN, address(token), r, nonce, deadline, sig);
    }

    function test_tampered_user() public {
        Reward[] memory r = batch;
        r[0].user = stranger;
        _expectUnauthorized(_signer(CAMPAIGN, address(token), r, nonce, deadline, sig));
        bank.pushRewards(CAMPAIGN, address(token), r, nonce, deadline, sig);
    }

    function test_tampered_droppedOrReorderedLine() public {
        Reward[] memory r = new Reward[](1);
        r[0] = batch[0];
        _expectUnauthorized(_signer(CAMPAIGN, address(token), r, nonce, deadline, sig));
        bank.pushRewards(CAMPAIGN, address(token), r, nonce, deadline, sig);
        Reward[] memory swapped = new Reward[](2);
        swapped[0] = batch[1];
        swapped[1] = batch[0];
        _expectUnauthorized(_signer(CAMPAIGN, address(token), swapped, nonce, deadline, sig));
        bank.pushRewards(CAMPAIGN, address(token), swapped, nonce, deadline, sig);
    }

    function test_tampered_token() public {
        TestToken other = new TestToken("Other", "OTH", 18);
        _expectUnauthorized(_signer(CAMPAIGN, address(other), batch, nonce, deadline, sig));
        bank.pushRewards(CAMPAIGN, address(other), batch, nonce, deadline, sig);
    }

    function test_tampered_campaign() public {
        bytes32 c2 = bytes32(uint256(2));
        _allocate(bank, c2, address(token), 0);
        _expectUnauthorized(_signer(c2, address(token), batch, nonce, deadline, sig));
        bank.pushRewards(c2, address(token), batch, nonce, deadline, sig);
    }

    function test_tampered_nonce() public {
        bytes32 n2 = keccak256("other");
        _expectUnauthorized(_signer(CAMPAIGN, address(token), batch, n2, deadline, sig));
        bank.pushRewards(CAMPAIGN, address(token), batch, n2, deadline, sig);
    }

    function test_tampered_deadline() public {
        _expectUnauthorized(_signer(CAMPAIGN, address(token), batch, nonce, deadline + 1, sig));
        bank.pushRewards(CAMPAIGN, address(token), batch, nonce, deadline + 1, sig);
    }

    function testFuzz_anyTamperedAmountIsRejected(uint256 index, uint256 delta) public {
        index = bound(index, 0, 1);
        delta = bound(delta, 1, 1e18);
        Reward[] memory r = batch;
        r[index].amount += delta;
        _expectUnauthorized(_signer(CAMPAIGN, address(token), r, nonce, deadline, sig));
        bank.pushRewards(CAMPAIGN, address(token), r, nonce, deadline, sig);
    }

    function testFuzz_digestMatchesIndependentEncoding(address user, uint256 amount, bytes32 n, uint256 d) public view {
        vm.assume(user != address(0) && amount != 0);
        Reward[] memory r = new Reward[](1);
        r[0] = Reward(user, amount);
        assertEq(bank.hashPushRewards(CAMPAIGN, address(token), r, n, d), _digest(address(bank), CAMPAIGN, address(token), r, n, d));
    }
}
