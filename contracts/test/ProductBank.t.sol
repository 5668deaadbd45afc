// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {Fixture} from "./utils/Fixture.sol";
import {ProductBank} from "../src/ProductBank.sol";
import {IProductBank} from "../src/interfaces/IProductBank.sol";
import {IMultiTokenPushPull, Reward} from "../src/interfaces/IMultiTokenPushPull.sol";
import {FeeOnTransferToken, NoReturnToken} from "./mocks/Tokens.sol";
import {IAccessControl} from "@openzeppelin/contracts/access/IAccessControl.sol";
import {Pausable} from "@openzeppelin/contracts/utils/Pausable.sol";

contract ProductBankTest is Fixture {
    event FundsDeposited(address indexed token, address indexed depositor, uint256 amount);
    event FundsWithdrawn(address indexed token, address indexed recipient, uint256 amount);
    event CampaignBudgetAllocated(bytes32 indexed campaignId, address indexed token, uint256 budget);
    event CampaignDeactivated(bytes32 indexed campaignId);
    event RewardsPushed(bytes32 indexed campaignId, address indexed token, bytes32 nonce, uint256 total, uint256 count);
    event RewardAdded(address indexed token, address indexed user, address indexed emitter, uint256 amount);

    address internal constant ALICE = address(0xA1);
    address internal constant BOB = address(0xB0B);

    // ------------------------------------------------------------ constructor

    function test_constructor_setsRolesAndImmutables() public view {
        assertEq(bank.productId(), PRODUCT);
        assertEq(address(bank.pushPull()), address(pushPull));
        assertTrue(bank.hasRole(bank.DEFAULT_ADMIN_ROLE(), owner));
        assertTrue(bank.hasRole(bank.MANAGER_ROLE(), owner));
        assertTrue(bank.hasRole(bank.DISTRIBUTOR_ROLE(), distributor));
        assertFalse(bank.paused());
    }

    function test_constructor_revertsOnZeroAddresses() public {
        vm.expectRevert(IProductBank.ZeroAddress.selector);
        new ProductBank(PRODUCT, address(0), owner);
        vm.expectRevert(IProductBank.ZeroAddress.selector);
        new ProductBank(PRODUCT, address(pushPull), address(0));
    }

    function test_typehashes_matchSpec() public view {
        assertEq(bank.PUSH_REWARDS_TYPEHASH(), PUSH_TYPEHASH);
        assertEq(bank.REWARD_TYPEHASH(), REWARD_TYPEHASH);
        bytes32 domain = keccak256(
            abi.encode(DOMAIN_TYPEHASH, keccak256("Frak.ProductBank"), keccak256("1"), block.chainid, address(bank))
        );
        assertEq(bank.domainSeparator(), domain);
    }

    // ---------------------------------------------------------------- deposit

    function test_deposit_creditsAndEmits() public {
        vm.expectEmit(true, true, false, true, address(bank));
        emit FundsDeposited(address(token), address(this), 100e18);
        bank.deposit(address(token), 100e18);
        assertEq(token.balanceOf(address(bank)), 100e18);
        assertEq(bank.getAvailableBalance(address(token)), 100e18);
    }

    function test_deposit_revertsOnZeroTokenOrAmount() public {
        vm.expectRevert(IProductBank.ZeroAddress.selector);
        bank.deposit(address(0), 1);
        vm.expectRevert(IProductBank.ZeroAmount.selector);
        bank.deposit(address(token), 0);
    }

    function test_deposit_withoutAllowanceReverts() public {
        vm.prank(stranger);
        vm.expectRevert();
        bank.deposit(address(token), 1);
    }

    function test_deposit_feeOnTransferAccountsReceived() public {
        FeeOnTransferToken fee = new FeeOnTransferToken(100); // 1%
        fee.mint(address(this), 1000e18);
        fee.approve(address(bank), type(uint256).max);
        vm.expectEmit(true, true, false, true, address(bank));
        emit FundsDeposited(address(fee), address(this), 99e18);
        bank.deposit(address(fee), 100e18);
        assertEq(bank.getAvailableBalance(address(fee)), 99e18);
    }

    function test_deposit_noReturnToken() public {
        NoReturnToken usdt = new NoReturnToken();
        usdt.mint(address(this), 50e6);
        usdt.approve(address(bank), type(uint256).max);
        bank.deposit(address(usdt), 50e6);
        assertEq(usdt.balanceOf(address(bank)), 50e6);
    }

    // --------------------------------------------------------------- withdraw

    function test_withdraw_sendsToOwnerAndEmits() public {
        _fund(100e18);
        vm.expectEmit(true, true, false, true, address(bank));
        emit FundsWithdrawn(address(token), owner, 40e18);
        vm.prank(owner);
        bank.withdraw(address(token), 40e18);
        assertEq(token.balanceOf(owner), 40e18);
        assertEq(token.balanceOf(address(bank)), 60e18);
    }

    function test_withdraw_onlyOwner() public {
        _fund(100e18);
        vm.expectRevert(
            abi.encodeWithSelector(
                IAccessControl.AccessControlUnauthorizedAccount.selector, stranger, bank.DEFAULT_ADMIN_ROLE()
            )
        );
        vm.prank(stranger);
        bank.withdraw(address(token), 1);
    }

    function test_withdraw_revertsOnZero() public {
        vm.startPrank(owner);
        vm.expectRevert(IProductBank.ZeroAddress.selector);
        bank.withdraw(address(0), 1);
        vm.expectRevert(IProductBank.ZeroAmount.selector);
        bank.withdraw(address(token), 0);
        vm.stopPrank();
    }

    function test_withdraw_neverTouchesAllocatedFunds() public {
        _fund(100e18);
        _allocate(bank, CAMPAIGN, address(token), 70e18);
        assertEq(bank.getAvailableBalance(address(token)), 30e18);
        vm.startPrank(owner);
        vm.expectRevert(abi.encodeWithSelector(IProductBank.InsufficientAvailableBalance.selector, 30e18, 30e18 + 1));
        bank.withdraw(address(token), 30e18 + 1);
        bank.withdraw(address(token), 30e18); // exact fit
        vm.stopPrank();
        assertEq(token.balanceOf(address(bank)), 70e18);
        assertEq(bank.getAvailableBalance(address(token)), 0);
    }

    function test_availableBalance_countsDonations() public {
        _fund(10e18);
        token.transfer(address(bank), 5e18);
        assertEq(bank.getAvailableBalance(address(token)), 15e18);
    }

    // ------------------------------------------------------------- allocation

    function test_allocate_cappedEmitsAndReserves() public {
        _fund(100e18);
        vm.expectEmit(true, true, false, true, address(bank));
        emit CampaignBudgetAllocated(CAMPAIGN, address(token), 60e18);
        _allocate(bank, CAMPAIGN, address(token), 60e18);
        assertEq(bank.getCampaignBudget(CAMPAIGN, address(token)), 60e18);
        assertEq(bank.getAllocatedBalance(address(token)), 60e18);
        assertTrue(bank.isCampaignActive(CAMPAIGN));
        (address t, bool active, bool capped, uint256 remaining) = bank.getCampaign(CAMPAIGN);
        assertEq(t, address(token));
        assertTrue(active && capped);
        assertEq(remaining, 60e18);
    }

    function test_allocate_unlimitedReservesNothing() public {
        _allocate(bank, CAMPAIGN, address(token), 0);
        assertTrue(bank.isCampaignActive(CAMPAIGN));
        assertEq(bank.getAllocatedBalance(address(token)), 0);
        (, bool active, bool capped,) = bank.getCampaign(CAMPAIGN);
        assertTrue(active);
        assertFalse(capped);
    }

    function test_allocate_exactFitAndOverflow() public {
        _fund(100e18);
        _allocate(bank, CAMPAIGN, address(token), 100e18);
        vm.prank(owner);
        vm.expectRevert(abi.encodeWithSelector(IProductBank.InsufficientAvailableBalance.selector, 0, 1));
        bank.allocateCampaignBudget(bytes32(uint256(2)), address(token), 1);
    }

    function test_allocate_reallocationReleasesPreviousCap() public {
        _fund(100e18);
        _allocate(bank, CAMPAIGN, address(token), 80e18);
        _allocate(bank, CAMPAIGN, address(token), 100e18); // 80 released then 100 reserved
        assertEq(bank.getAllocatedBalance(address(token)), 100e18);
        _allocate(bank, CAMPAIGN, address(token), 10e18);
        assertEq(bank.getAllocatedBalance(address(token)), 10e18);
        _allocate(bank, CAMPAIGN, address(token), 0); // becomes unlimited
        assertEq(bank.getAllocatedBalance(address(token)), 0);
    }

    function test_allocate_reverts() public {
        bytes32 manager = bank.MANAGER_ROLE();
        vm.prank(stranger);
        vm.expectRevert(
            abi.encodeWithSelector(IAccessControl.AccessControlUnauthorizedAccount.selector, stranger, manager)
        );
        bank.allocateCampaignBudget(CAMPAIGN, address(token), 0);

        vm.startPrank(owner);
        vm.expectRevert(IProductBank.ZeroAddress.selector);
        bank.allocateCampaignBudget(CAMPAIGN, address(0), 0);
        vm.expectRevert(IProductBank.BudgetTooLarge.selector);
        bank.allocateCampaignBudget(CAMPAIGN, address(token), uint256(type(uint128).max) + 1);
        bank.allocateCampaignBudget(CAMPAIGN, address(token), 0);
        vm.expectRevert(abi.encodeWithSelector(IProductBank.CampaignTokenMismatch.selector, CAMPAIGN, address(0xDEAD)));
        bank.allocateCampaignBudget(CAMPAIGN, address(0xDEAD), 0);
        bank.deactivateCampaign(CAMPAIGN);
        vm.expectRevert(abi.encodeWithSelector(IProductBank.CampaignNotActive.selector, CAMPAIGN));
        bank.allocateCampaignBudget(CAMPAIGN, address(token), 0);
        vm.stopPrank();
    }

    function test_allocate_byGrantedManager() public {
        address manager = address(0x3A3A);
        bytes32 role = bank.MANAGER_ROLE();
        vm.prank(owner);
        bank.grantRole(role, manager);
        vm.prank(manager);
        bank.allocateCampaignBudget(CAMPAIGN, address(token), 0);
        assertTrue(bank.isCampaignActive(CAMPAIGN));
    }

    // ----------------------------------------------------------- deactivation

    function test_deactivate_releasesAllocationAndEmits() public {
        _fund(100e18);
        _allocate(bank, CAMPAIGN, address(token), 60e18);
        _push(bank, CAMPAIGN, address(token), _rewards1(ALICE, 10e18));
        vm.expectEmit(true, false, false, true, address(bank));
        emit CampaignDeactivated(CAMPAIGN);
        vm.prank(owner);
        bank.deactivateCampaign(CAMPAIGN);
        assertFalse(bank.isCampaignActive(CAMPAIGN));
        assertEq(bank.getAllocatedBalance(address(token)), 0);
        assertEq(bank.getCampaignBudget(CAMPAIGN, address(token)), 0);
        assertEq(bank.getAvailableBalance(address(token)), 90e18);
    }

    function test_deactivate_reverts() public {
        bytes32 manager = bank.MANAGER_ROLE();
        vm.prank(stranger);
        vm.expectRevert(
            abi.encodeWithSelector(IAccessControl.AccessControlUnauthorizedAccount.selector, stranger, manager)
        );
        bank.deactivateCampaign(CAMPAIGN);
        vm.startPrank(owner);
        vm.expectRevert(abi.encodeWithSelector(IProductBank.CampaignNotActive.selector, CAMPAIGN));
        bank.deactivateCampaign(CAMPAIGN); // never allocated
        bank.allocateCampaignBudget(CAMPAIGN, address(token), 0);
        bank.deactivateCampaign(CAMPAIGN);
        vm.expectRevert(abi.encodeWithSelector(IProductBank.CampaignNotActive.selector, CAMPAIGN));
        bank.deactivateCampaign(CAMPAIGN); // twice
        vm.stopPrank();
    }

    // ------------------------------------------------------------------ pushes

    function test_push_forwardsAndEmits() public {
        _fund(100e18);
        _allocate(bank, CAMPAIGN, address(token), 50e18);
        Reward[] memory r = new Reward[](2);
        r[0] = Reward(ALICE, 3e18);
        r[1] = Reward(BOB, 4e18);
        bytes32 nonce = keccak256("n1");
        uint256 deadline = block.timestamp + 60;
        bytes memory sig = _sign(DISTRIBUTOR_KEY, address(bank), CAMPAIGN, address(token), r, nonce, deadline);

        vm.expectEmit(true, true, true, true, address(pushPull));
        emit RewardAdded(address(token), ALICE, address(bank), 3e18);
        vm.expectEmit(true, true, true, true, address(pushPull));
        emit RewardAdded(address(token), BOB, address(bank), 4e18);
        vm.expectEmit(true, true, false, true, address(bank));
        emit RewardsPushed(CAMPAIGN, address(token), nonce, 7e18, 2);
        vm.prank(stranger); // any sender may relay
        bank.pushRewards(CAMPAIGN, address(token), r, nonce, deadline, sig);

        assertTrue(bank.isNonceUsed(nonce));
        assertEq(token.balanceOf(address(pushPull)), 7e18);
        assertEq(token.balanceOf(address(bank)), 93e18);
        assertEq(pushPull.getPendingAmount(address(token), ALICE), 3e18);
        assertEq(pushPull.getPendingAmount(address(token), BOB), 4e18);
        assertEq(bank.getCampaignBudget(CAMPAIGN, address(token)), 43e18);
        assertEq(bank.getAllocatedBalance(address(token)), 43e18);
        assertEq(bank.getAvailableBalance(address(token)), 50e18);
        assertEq(bank.hashPushRewards(CAMPAIGN, address(token), r, nonce, deadline), _digest(address(bank), CAMPAIGN, address(token), r, nonce, deadline));
    }

    function test_push_cappedExactFitThenExhausted() public {
        _fund(100e18);
        _allocate(bank, CAMPAIGN, address(token), 10e18);
        _push(bank, CAMPAIGN, address(token), _rewards1(ALICE, 10e18)); // exact fit
        assertEq(bank.getCampaignBudget(CAMPAIGN, address(token)), 0);
        assertTrue(bank.isCampaignActive(CAMPAIGN));
        vm.expectRevert(abi.encodeWithSelector(IProductBank.InsufficientBudget.selector, 0, 1));
        _push(bank, CAMPAIGN, address(token), _rewards1(ALICE, 1));
    }

    function test_push_cappedOverBudgetReverts() public {
        _fund(100e18);
        _allocate(bank, CAMPAIGN, address(token), 10e18);
        vm.expectRevert(abi.encodeWithSelector(IProductBank.InsufficientBudget.selector, 10e18, 10e18 + 1));
        _push(bank, CAMPAIGN, address(token), _rewards1(ALICE, 10e18 + 1));
    }

    function test_push_unlimitedCannotSpendAllocatedFunds() public {
        _fund(100e18);
        bytes32 capped = bytes32(uint256(7));
        _allocate(bank, capped, address(token), 80e18);
        _allocate(bank, CAMPAIGN, address(token), 0);
        _push(bank, CAMPAIGN, address(token), _rewards1(ALICE, 20e18)); // exact fit of the unallocated part
        vm.expectRevert(abi.encodeWithSelector(IProductBank.InsufficientAvailableBalance.selector, 0, 1));
        _push(bank, CAMPAIGN, address(token), _rewards1(ALICE, 1));
        _push(bank, capped, address(token), _rewards1(BOB, 80e18)); // the capped campaign still gets all of it
        assertEq(token.balanceOf(address(bank)), 0);
    }

    function test_push_inactiveOrDeactivatedCampaignReverts() public {
        _fund(100e18);
        vm.expectRevert(abi.encodeWithSelector(IProductBank.CampaignNotActive.selector, CAMPAIGN));
        _push(bank, CAMPAIGN, address(token), _rewards1(ALICE, 1));
        _allocate(bank, CAMPAIGN, address(token), 0);
        vm.prank(owner);
        bank.deactivateCampaign(CAMPAIGN);
        vm.expectRevert(abi.encodeWithSelector(IProductBank.CampaignNotActive.selector, CAMPAIGN));
        _push(bank, CAMPAIGN, address(token), _rewards1(ALICE, 1));
    }

    function test_push_wrongTokenForCampaignReverts() public {
        _fund(100e18);
        _allocate(bank, CAMPAIGN, address(token), 0);
        NoReturnToken other = new NoReturnToken();
        vm.expectRevert(abi.encodeWithSelector(IProductBank.CampaignNotActive.selector, CAMPAIGN));
        _push(bank, CAMPAIGN, address(other), _rewards1(ALICE, 1));
    }

    function test_push_invalidBatchesRevert() public {
        _fund(100e18);
        _allocate(bank, CAMPAIGN, address(token), 0);
        vm.expectRevert(IProductBank.EmptyBatch.selector);
        _push(bank, CAMPAIGN, address(token), new Reward[](0));
        Reward[] memory r = _rewardsN(3, 0x100, 1e18);
        r[1].amount = 0;
        vm.expectRevert(abi.encodeWithSelector(IProductBank.InvalidReward.selector, 1));
        _push(bank, CAMPAIGN, address(token), r);
        r[1].amount = 1;
        r[2].user = address(0);
        vm.expectRevert(abi.encodeWithSelector(IProductBank.InvalidReward.selector, 2));
        _push(bank, CAMPAIGN, address(token), r);
        r = new Reward[](2);
        r[0] = Reward(ALICE, type(uint256).max);
        r[1] = Reward(BOB, 1);
        vm.expectRevert(IProductBank.TotalOverflow.selector);
        _push(bank, CAMPAIGN, address(token), r);
    }

    function test_push_dirtyAddressBitsRejected() public {
        _fund(100e18);
        _allocate(bank, CAMPAIGN, address(token), 0);
        Reward[] memory r = _rewards1(ALICE, 1e18);
        bytes32 nonce = keccak256("dirty");
        uint256 deadline = block.timestamp + 60;
        bytes memory sig = _sign(DISTRIBUTOR_KEY, address(bank), CAMPAIGN, address(token), r, nonce, deadline);
        bytes memory data =
            abi.encodeCall(ProductBank.pushRewards, (CAMPAIGN, address(token), r, nonce, deadline, sig));
        // rewards[0].user is argument word 7 (6 head words, then the array length).
        uint256 at = 4 + 32 * 7;
        data[at] = 0x01; // set a high (non-address) byte
        (bool ok, bytes memory ret) = address(bank).call(data);
        assertFalse(ok);
        assertEq(bytes32(ret), bytes32(abi.encodeWithSelector(IProductBank.InvalidReward.selector, 0)));
    }

    function test_push_duplicateUsersAddUp() public {
        _fund(100e18);
        _allocate(bank, CAMPAIGN, address(token), 0);
        Reward[] memory r = new Reward[](3);
        r[0] = Reward(ALICE, 1e18);
        r[1] = Reward(BOB, 2e18);
        r[2] = Reward(ALICE, 3e18);
        _push(bank, CAMPAIGN, address(token), r);
        assertEq(pushPull.getPendingAmount(address(token), ALICE), 4e18);
        assertEq(pushPull.getTotalPending(address(token)), 6e18);
    }

    function test_push_bankNotAuthorizedReverts() public {
        _fund(100e18);
        _allocate(bank, CAMPAIGN, address(token), 0);
        vm.prank(owner);
        pushPull.revokePusher(address(bank));
        vm.expectRevert(abi.encodeWithSelector(IMultiTokenPushPull.UnauthorizedPusher.selector, address(bank)));
        _push(bank, CAMPAIGN, address(token), _rewards1(ALICE, 1));
    }

    function test_push_feeOnTransferTokenRejected() public {
        FeeOnTransferToken fee = new FeeOnTransferToken(100);
        fee.mint(address(this), 1000e18);
        fee.approve(address(bank), type(uint256).max);
        bank.deposit(address(fee), 100e18);
        _allocate(bank, CAMPAIGN, address(fee), 0);
        vm.expectRevert(
            abi.encodeWithSelector(IMultiTokenPushPull.InsufficientFunding.selector, address(fee), 9.9e18, 10e18)
        );
        _push(bank, CAMPAIGN, address(fee), _rewards1(ALICE, 10e18));
    }

    // ------------------------------------------------------------------ pause

    function test_pause_stopsPushesUntilUnpaused() public {
        _fund(100e18);
        _allocate(bank, CAMPAIGN, address(token), 0);
        vm.prank(owner);
        bank.pause();
        assertTrue(bank.paused());
        vm.expectRevert(Pausable.EnforcedPause.selector);
        _push(bank, CAMPAIGN, address(token), _rewards1(ALICE, 1));
        // funds management still works while paused
        vm.prank(owner);
        bank.withdraw(address(token), 1e18);
        vm.prank(owner);
        bank.unpause();
        _push(bank, CAMPAIGN, address(token), _rewards1(ALICE, 1));
        assertEq(pushPull.getPendingAmount(address(token), ALICE), 1);
    }

    function test_pause_onlyOwnerAndStateChecks() public {
        bytes32 admin = bank.DEFAULT_ADMIN_ROLE();
        vm.startPrank(stranger);
        vm.expectRevert(abi.encodeWithSelector(IAccessControl.AccessControlUnauthorizedAccount.selector, stranger, admin));
        bank.pause();
        vm.expectRevert(abi.encodeWithSelector(IAccessControl.AccessControlUnauthorizedAccount.selector, stranger, admin));
        bank.unpause();
        vm.stopPrank();
        vm.startPrank(owner);
        vm.expectRevert(Pausable.ExpectedPause.selector);
        bank.unpause();
        bank.pause();
        vm.expectRevert(Pausable.EnforcedPause.selector);
        bank.pause();
        vm.stopPrank();
    }

    // ------------------------------------------------------------------- fuzz

    function testFuzz_push_creditsEveryone(uint8 n, uint96 amountSeed, uint128 budget) public {
        uint256 count = bound(n, 1, 40);
        uint256 amount = bound(amountSeed, 1, 1e24);
        _fund(1e30);
        budget = uint128(bound(budget, 0, 1e29));
        _allocate(bank, CAMPAIGN, address(token), budget);
        Reward[] memory r = _rewardsN(count, 0x1000, amount);
        uint256 total = count * amount;
        if (budget != 0 && total > budget) {
            vm.expectRevert(abi.encodeWithSelector(IProductBank.InsufficientBudget.selector, budget, total));
            _push(bank, CAMPAIGN, address(token), r);
            return;
        }
        _push(bank, CAMPAIGN, address(token), r);
        for (uint256 i; i < count; ++i) {
            assertEq(pushPull.getPendingAmount(address(token), r[i].user), amount);
        }
        assertEq(pushPull.getTotalPending(address(token)), total);
        assertEq(token.balanceOf(address(pushPull)), total);
        assertEq(bank.getAllocatedBalance(address(token)), budget == 0 ? 0 : budget - total);
    }

    function testFuzz_withdraw_boundedByAvailable(uint96 deposit_, uint96 alloc, uint96 want) public {
        uint256 d = bound(deposit_, 1, 1e27);
        uint256 a = bound(alloc, 0, d);
        _fund(d);
        _allocate(bank, CAMPAIGN, address(token), a);
        uint256 avail = a == 0 ? d : d - a;
        uint256 w = bound(want, 1, 1e27);
        vm.prank(owner);
        if (w > avail) {
            vm.expectRevert(abi.encodeWithSelector(IProductBank.InsufficientAvailableBalance.selector, avail, w));
            bank.withdraw(address(token), w);
        } else {
            bank.withdraw(address(token), w);
            assertGe(token.balanceOf(address(bank)), bank.getAllocatedBalance(address(token)), "allocated covered");
        }
    }
}
